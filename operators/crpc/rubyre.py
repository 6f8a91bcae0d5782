"""Ruby regular expressions (what ChatOps RPC listings carry) as Python ones (pure: no I/O).

A listing's method ``regex`` is Ruby source, written for Onigmo: named groups are
``(?<name>...)``, which Python's :mod:`re` refuses. :func:`translate` rewrites what differs
and is common in listings, and refuses (:class:`~eeveepy.errors.RegexError`) what Python
cannot express, rather than letting a method match something else than its server meant:

=====================  =======================  =========================================
Ruby                   Python                   note
=====================  =======================  =========================================
``(?<name>...)``       ``(?P<name>...)``        ``(?<=`` and ``(?<!`` (lookbehind) stay
``(?'name'...)``       ``(?P<name>...)``
``\\k<name>``           ``(?P=name)``            a back reference by name
``\\z``                 ``\\Z``                   the very end of the text
``\\Z``                 ``(?=\\n?\\Z)``            the end, or before a final newline
``\\h`` / ``\\H``        ``[0-9a-fA-F]`` / ``[^...]``  a hex digit (in a class: its ranges)
``[[:alpha:]]``        ``[a-zA-Z]``             and the other POSIX classes below
``(?m:...)``           ``(?s:...)``             Ruby's ``m`` is Python's dot-all
=====================  =======================  =========================================

``\\p{...}``, ``\\g<...>`` (subexpression calls) and conditionals are refused. Ruby's ``^`` and
``$`` always match at line breaks: :func:`compile_method` compiles with ``re.MULTILINE``.
"""

from __future__ import annotations

import re
import warnings
from typing import Final

from eeveepy.errors import RegexError

__all__ = ["MAX_REGEX", "compile_method", "translate"]

MAX_REGEX: Final = 2000
"""Longest method regex (characters) accepted from a listing."""

_POSIX: Final = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "space": r"\s",
    "blank": r" \t",
    "xdigit": "0-9a-fA-F",
    "word": r"\w",
    "punct": r"!-/:-@\[-`{-~",
    "cntrl": r"\x00-\x1f\x7f",
    "print": r"\x20-\x7e",
    "graph": r"\x21-\x7e",
}
_HEX: Final = "0-9a-fA-F"
_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FLAGS_RE: Final = re.compile(r"\(\?([imx]*)(?:-([imx]*))?([:)])")
_REFUSED_ESCAPES: Final = {
    "p": "Unicode properties (\\p{...})",
    "P": "Unicode properties (\\P{...})",
    "g": "subexpression calls (\\g<...>)",
    "R": "\\R (any line break)",
    "X": "\\X (a grapheme cluster)",
    "K": "\\K (keep out of the match)",
}


def _group_name(src: str, at: int, close: str) -> tuple[str, int]:
    """The group name starting at ``at`` and ending with ``close``; its end index."""
    end = src.find(close, at)
    name = src[at:end] if end != -1 else ""
    if end == -1 or not _NAME_RE.fullmatch(name):
        raise RegexError(f"invalid group name at position {at} of {src!r}")
    return name, end + 1


def _escape(src: str, i: int, in_class: bool) -> tuple[str, int]:
    """The translation of the escape at ``src[i]`` (a backslash); the index after it."""
    if i + 1 >= len(src):
        raise RegexError(f"a lone backslash ends {src!r}")
    c = src[i + 1]
    if c in _REFUSED_ESCAPES:
        raise RegexError(f"{_REFUSED_ESCAPES[c]} cannot be translated to Python (in {src!r})")
    if c == "h":
        return (_HEX if in_class else f"[{_HEX}]"), i + 2
    if c == "H":
        if in_class:
            raise RegexError(f"\\H inside a character class cannot be translated (in {src!r})")
        return f"[^{_HEX}]", i + 2
    if not in_class:
        if c == "z":
            return r"\Z", i + 2
        if c == "Z":
            return r"(?=\n?\Z)", i + 2
        if c == "k" and src[i + 2 : i + 3] == "<":
            name, end = _group_name(src, i + 3, ">")
            return f"(?P={name})", end
    return src[i : i + 2], i + 2


def _group(src: str, i: int) -> tuple[str, int]:
    """The translation of the group opening at ``src[i]`` (``(``); the index after its head."""
    head = src[i : i + 3]
    if head == "(?<" and src[i + 3 : i + 4] not in ("=", "!"):
        name, end = _group_name(src, i + 3, ">")
        return f"(?P<{name}>", end
    if head == "(?'":
        name, end = _group_name(src, i + 3, "'")
        return f"(?P<{name}>", end
    if head == "(?(":
        raise RegexError(f"conditional groups cannot be translated (in {src!r})")
    flags = _FLAGS_RE.match(src, i)
    if flags is not None:
        on, off, tail = (flags.group(1) or ""), (flags.group(2) or ""), flags.group(3)
        on, off = on.replace("m", "s"), off.replace("m", "s")
        if tail == ")" and i != 0:  # Python takes global flags only at the very start
            raise RegexError(f"inline flags in the middle of {src!r}: use (?{on}:...)")
        return "(?" + on + (f"-{off}" if off else "") + tail, flags.end()
    return "(", i + 1


def translate(src: str) -> str:
    """The Python regex source for the Ruby regex source ``src``.

    Raises :class:`~eeveepy.errors.RegexError` for what cannot be translated; whether the
    result compiles is :func:`compile_method`'s business.
    """
    out: list[str] = []
    i, n = 0, len(src)
    in_class = False
    while i < n:
        c = src[i]
        if c == "\\":
            piece, i = _escape(src, i, in_class)
        elif in_class:
            piece, i = _class_item(src, i)
            in_class = piece != "]"
        elif c == "[":
            in_class = True
            piece = "[^" if src.startswith("[^", i) else "["
            i += len(piece)
            if src.startswith("]", i):  # a leading ] is literal
                piece, i = piece + r"\]", i + 1
        elif c == "(":
            piece, i = _group(src, i)
        else:
            piece, i = c, i + 1
        out.append(piece)
    return "".join(out)


def _class_item(src: str, i: int) -> tuple[str, int]:
    """The translation of ``src[i]`` inside a character class (``]`` ends the class)."""
    if src.startswith("[:", i):
        end = src.find(":]", i + 2)
        name = src[i + 2 : end] if end != -1 else ""
        if name not in _POSIX:
            raise RegexError(f"unknown or negated POSIX class at position {i} of {src!r}")
        return _POSIX[name], end + 2
    if src[i] == "[":
        raise RegexError(f"nested character classes cannot be translated (in {src!r})")
    if src.startswith("&&", i):
        raise RegexError(f"class intersections (&&) cannot be translated (in {src!r})")
    return src[i], i + 1


def compile_method(regex: str) -> re.Pattern[str]:
    """A listing's method regex as a Python pattern to ``fullmatch`` the command text.

    A leading ``^`` and a trailing ``$`` are dropped first (the match is anchored at both ends
    anyway), then the rest is translated; the pattern is case-insensitive, as ChatOps RPC
    clients match. Raises :class:`~eeveepy.errors.RegexError` with the reason.
    """
    if not isinstance(regex, str):
        raise RegexError("the regex is not a string")
    if len(regex) > MAX_REGEX:
        raise RegexError(f"the regex is longer than {MAX_REGEX} characters")
    src = regex.removeprefix("^")
    if src.endswith("$") and not src.endswith("\\$"):
        src = src[:-1]
    python = translate(src)
    try:
        with warnings.catch_warnings():  # a server's `[--x]` is not this operator's warning
            warnings.simplefilter("ignore", FutureWarning)
            return re.compile(python, re.IGNORECASE | re.MULTILINE)
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        raise RegexError(f"{regex!r} is not a regex Python can use: {exc}") from None
