"""Splitting a chat line into a command and its arguments (pure: no I/O).

A line is a command when it starts with a prefix, addresses the bot by name or is private
(:func:`split_command`); its arguments are ChatOps-RPC-style ``--long-args``
(:func:`parse_long_args`) plus the named groups of the command's ``pattern``
(:func:`parse_arguments`). See "Commands" in docs/protocol.md.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CommandLine",
    "parse_arguments",
    "parse_long_args",
    "prefixes_for",
    "split_command",
]

# A command word in chat: letters in any case (it is lowercased), then the name's characters.
_WORD_RE: Final = re.compile(r"([A-Za-z0-9][A-Za-z0-9_-]*)(?:\s+|$)")


@dataclass(frozen=True)
class CommandLine:
    """A chat line that is a command: ``name`` (lowercased) and the argument ``text``."""

    name: str
    text: str
    via: str
    """How it was recognised: ``"prefix"``, ``"name"`` (addressed) or ``"private"``."""


def prefixes_for(
    prefixes: Sequence[str],
    overrides: Mapping[str, Sequence[str]],
    platform: str,
    network: str,
    room: str,
) -> list[str]:
    """The command prefixes of a room: the most specific override, else ``prefixes``.

    Override keys are ``"platform/network/room"``, ``"platform/network"`` or ``"platform"``.
    """
    for key in (f"{platform}/{network}/{room}", f"{platform}/{network}", platform):
        if key in overrides:
            return list(overrides[key])
    return list(prefixes)


def _strip_prefix(text: str, prefixes: Sequence[str]) -> str | None:
    for prefix in sorted(prefixes, key=len, reverse=True):
        if prefix and text[: len(prefix)].casefold() == prefix.casefold():
            return text[len(prefix) :]
    return None


@functools.lru_cache(maxsize=64)
def _address_re(names: tuple[str, ...]) -> re.Pattern[str] | None:
    if not names:
        return None
    alts = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    # "eevee: cmd", "eevee, cmd", "@eevee cmd", "@eevee: cmd"
    return re.compile(rf"(?:@(?:{alts})[:,]?|(?:{alts})[:,])\s+(.*)", re.IGNORECASE | re.DOTALL)


def split_command(
    text: str, *, prefixes: Sequence[str], names: Sequence[str], private: bool
) -> CommandLine | None:
    """The command in a chat line, or None when the line is not one.

    A line is a command when it starts with one of ``prefixes`` (``!echo hi``), when it
    addresses the bot by one of ``names`` (``eevee: echo hi``, ``eevee, echo hi``,
    ``@eevee echo hi``; a prefix may follow) or, for a private message, always (the prefix is
    optional). The command word is ``[A-Za-z0-9][A-Za-z0-9_-]*`` (lowercased); a line whose
    first word is anything else (``!!!``, ``! hi``) is not a command.
    """
    body = text.strip()
    rest = _strip_prefix(body, prefixes)
    via = "prefix"
    if rest is None:
        pattern = _address_re(tuple(names))
        match = pattern.fullmatch(body) if pattern else None
        if match is not None:
            via = "name"
            rest = match.group(1)
            rest = _strip_prefix(rest, prefixes) or rest
        elif private:
            via = "private"
            rest = body
        else:
            return None
    word = _WORD_RE.match(rest)
    if word is None:
        return None
    return CommandLine(word.group(1).lower(), rest[word.end() :].strip(), via)


def parse_long_args(text: str) -> tuple[dict[str, str], str]:
    """``--long-args`` as ChatOps RPC clients parse them: ``(args, the remaining text)``.

    The text is cut at its last `` --`` (a space then two dashes; the start of the argument
    text counts as a space), again and again: each cut-off piece is one argument, its key
    running from the dashes to the first space and its value being the rest, spaces included
    (``--reason just because`` gives ``reason="just because"``). A key with no value (or only
    spaces) gets ``"true"``. Keys are kept as written (``--dry-run`` gives ``dry-run``), the
    first of a repeated key wins, values are stripped at their ends. What precedes the first
    argument, stripped, is the remaining text; ``-x``, ``a--b`` and a dash that is not preceded
    by a space are ordinary text.
    """
    args: dict[str, str] = {}
    work = " " + text
    while (cut := work.rfind(" --")) != -1:
        piece = work[cut + 3 :]
        key, _, value = piece.partition(" ")
        args[key] = value.strip() or "true"  # later cuts are earlier in the text: they win
        work = work[:cut]
    return args, work.strip()


def parse_arguments(
    pattern: re.Pattern[str] | None, text: str
) -> tuple[dict[str, str], str] | None:
    """Arguments of an invocation: ``(args, text)``, or None when ``pattern`` does not match.

    The ``--long-args`` are taken out first (:func:`parse_long_args`); ``pattern`` must then
    match the remaining text entirely. Its named groups that matched become arguments too,
    and an argument given as a flag wins over a group of the same name (as in ChatOps RPC).
    """
    args, rest = parse_long_args(text)
    if pattern is not None:
        match = pattern.fullmatch(rest)
        if match is None:
            return None
        captured = {k: v for k, v in match.groupdict().items() if v is not None}
        args = captured | args
    return args, rest
