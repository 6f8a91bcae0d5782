"""IRC protocol lines: read one (:func:`parse_line`) and write one (:func:`format_line`).

:func:`format_line` is the only way the connector builds a line, and it can never produce a
second command: every parameter is sanitised (no CR, LF or NUL). :func:`parse_line` is lenient:
any string gives an :class:`IrcLine` or None, never an exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from eeveepy.errors import IrcTextError
from operators.irc.text import sanitize

__all__ = ["IrcLine", "format_line", "parse_line", "split_source"]


@dataclass(frozen=True)
class IrcLine:
    """One parsed IRC protocol line."""

    command: str
    """Upper-cased command or three-digit numeric."""
    params: list[str] = field(default_factory=list)
    source: str | None = None
    """The prefix without its ``:`` (``nick!user@host`` or a server name), if any."""
    tags: dict[str, str] = field(default_factory=dict)
    """IRCv3 message tags, values unescaped (a tag without value maps to ``""``)."""

    def param(self, index: int, default: str = "") -> str:
        """Parameter ``index`` or ``default`` when there are not that many."""
        return self.params[index] if -len(self.params) <= index < len(self.params) else default

    @property
    def nick(self) -> str:
        """The source's nick (or server name); ``""`` without a source."""
        return split_source(self.source)[0]


_TAG_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


def _unescape_tag(value: str) -> str:
    out: list[str] = []
    chars = iter(value)
    for c in chars:
        if c == "\\":
            nxt = next(chars, "")
            out.append(_TAG_UNESCAPES.get(nxt, nxt))
        else:
            out.append(c)
    return "".join(out)


def parse_line(line: str) -> IrcLine | None:
    """Parse one line as received (trailing CR LF optional); None when it is not a command.

    Lenient: any string gives either None or an :class:`IrcLine`, never an exception.

    >>> parse_line(":a!b@c PRIVMSG #x :hi there").params
    ['#x', 'hi there']
    """
    line = line.rstrip("\r\n").replace("\x00", "")
    tags: dict[str, str] = {}
    if line.startswith("@"):
        raw_tags, _, line = line[1:].partition(" ")
        for item in raw_tags.split(";"):
            if item:
                key, _, value = item.partition("=")
                tags[key] = _unescape_tag(value)
        line = line.lstrip(" ")
    source: str | None = None
    if line.startswith(":"):
        source, _, line = line[1:].partition(" ")
        line = line.lstrip(" ")
    trailing: str | None = None
    if " :" in line:
        line, _, trailing = line.partition(" :")
    elif line.startswith(":"):
        line, trailing = "", line[1:]
    words = [w for w in line.split(" ") if w]  # only ASCII spaces separate parameters
    if not words:
        return None
    params = words[1:]
    if trailing is not None:
        params.append(trailing)
    return IrcLine(command=words[0].upper(), params=params, source=source or None, tags=tags)


_COMMAND_RE = re.compile(r"[A-Za-z]+|\d{3}")


def format_line(command: str, *params: str) -> str:
    """Build one protocol line (without CR LF) that can never hold a second command.

    Every parameter is :func:`sanitize`-d. Middle parameters lose spaces and a leading ``:``
    (they cannot carry them); the last one is sent as a trailing parameter (``:text``) when it
    needs to be. Empty middle parameters are dropped.
    """
    if _COMMAND_RE.fullmatch(command) is None:
        raise IrcTextError(f"not an IRC command: {command!r}")
    parts = [command.upper()]
    *middle, last = params if params else ("",)
    for p in middle:
        p = sanitize(p).replace(" ", "").lstrip(":")
        if p:
            parts.append(p)
    if params:
        last = sanitize(last)
        if not last or " " in last or last.startswith(":"):
            last = ":" + last
        parts.append(last)
    return " ".join(parts)


def split_source(source: str | None) -> tuple[str, str | None]:
    """``("nick", "user@host")`` from ``nick!user@host``; ``(server, None)`` for a server."""
    if not source:
        return "", None
    nick, sep, rest = source.partition("!")
    if sep:
        return nick, rest
    nick, sep, host = source.partition("@")
    return nick, (f"*@{host}" if sep else None)
