"""IRC text with no I/O: formatting, splitting, case mapping, classification.

What the IRC connector does to a message's text before it reaches the bus or the socket, as
pure functions, testable without a server:

- :func:`strip_formatting` removes mIRC formatting codes (bold, colours, ...);
  :func:`markdown_to_irc` turns simple markdown (``**bold**``, ``*italic*``, ``_italic_``,
  `` `code` ``) into them.
- :func:`sanitize` makes a string safe as one IRC parameter (no CR, LF or NUL);
  :func:`split_message` cuts text into lines that fit the 512-byte line limit without ever
  breaking a UTF-8 character; :func:`text_budget` says how many bytes of text fit.
- :func:`irc_lower` compares names the way the server does; :func:`parse_ctcp_action` and
  :func:`mentions` classify messages.

Protocol lines themselves are read and written by :mod:`operators.irc.lines`. No function here
raises on arbitrary text input; the only error is :class:`~eeveepy.errors.IrcTextError` for
programming mistakes (an impossible byte budget).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from eeveepy.errors import IrcTextError

__all__ = [
    "CTCP",
    "LINE_LIMIT",
    "irc_lower",
    "markdown_to_irc",
    "mentions",
    "parse_ctcp_action",
    "sanitize",
    "split_message",
    "strip_formatting",
    "text_budget",
]

LINE_LIMIT = 512
"""RFC 1459 line limit in bytes, CR LF included (IRCv3 tags have their own budget)."""

BOLD = "\x02"
ITALIC = "\x1d"
MONOSPACE = "\x11"
RESET = "\x0f"
CTCP = "\x01"


# -- formatting --------------------------------------------------------------------------------

_FORMAT_RE = re.compile(
    r"\x03(?:\d{1,2}(?:,\d{1,2})?)?"  # mIRC colour: ^C, ^Cfg, ^Cfg,bg
    r"|\x04(?:[0-9A-Fa-f]{6}(?:,[0-9A-Fa-f]{6})?)?"  # hex colour
    r"|[\x02\x0f\x11\x16\x1d\x1e\x1f]"  # bold, reset, mono, reverse, italic, strike, underline
)
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_LINEBREAK_RE = re.compile(r"\r\n|\r|\n")


def strip_formatting(text: str) -> str:
    """``text`` without IRC formatting codes (bold, italic, underline, colours, reset...).

    Idempotent: every formatting control character is removed, so none is left to strip.

    >>> strip_formatting("\\x02bold\\x02 \\x0304,01red\\x03 text")
    'bold red text'
    """
    return _FORMAT_RE.sub("", text)


_CODE_RE = re.compile(r"`([^`\r\n]+)`")
_BOLD_RE = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_STAR_ITALIC_RE = re.compile(r"(?<![*\w])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![*\w])")
_UNDERSCORE_ITALIC_RE = re.compile(r"(?<![_\w])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![_\w])")


def markdown_to_irc(text: str) -> str:
    """Map simple markdown to IRC formatting codes.

    ``**bold**`` -> ``\\x02bold\\x02``, ``*italic*`` and ``_italic_`` -> ``\\x1d...\\x1d``,
    `` `code` `` -> ``\\x11code\\x11`` (monospace; nothing inside a code span is converted).
    Markers must hug the text (``2 * 3 * 4`` stays as it is), and ``_`` inside a word
    (``snake_case_name``) is not italic. Anything else is left untouched.

    >>> markdown_to_irc("**hi** `x*y*` _there_")
    '\\x02hi\\x02 \\x11x*y*\\x11 \\x1dthere\\x1d'
    """
    out: list[str] = []
    pos = 0
    for m in _CODE_RE.finditer(text):
        out.append(_inline(text[pos : m.start()]))
        out.append(MONOSPACE + m.group(1) + MONOSPACE)
        pos = m.end()
    out.append(_inline(text[pos:]))
    return "".join(out)


def _inline(text: str) -> str:
    text = _BOLD_RE.sub(lambda m: BOLD + m.group(1) + BOLD, text)
    text = _STAR_ITALIC_RE.sub(lambda m: ITALIC + m.group(1) + ITALIC, text)
    return _UNDERSCORE_ITALIC_RE.sub(lambda m: ITALIC + m.group(1) + ITALIC, text)


def sanitize(text: str) -> str:
    """``text`` made safe as (part of) one IRC line: CR/LF become spaces, NUL is dropped.

    Lone surrogates (which cannot be encoded as UTF-8) become U+FFFD.
    """
    text = _LINEBREAK_RE.sub(" ", text.replace("\x00", ""))
    return _SURROGATE_RE.sub("\ufffd", text)


# -- splitting ---------------------------------------------------------------------------------


def split_message(text: str, max_bytes: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``max_bytes`` UTF-8 bytes each, one line per piece.

    Each line of ``text`` (split at CR LF, CR or LF) is cut separately, preferring the last
    space of a piece (the space stays at the end of the piece) when it is in the second half,
    and never inside a UTF-8 character; empty lines are dropped. NUL characters are removed
    and lone surrogates become U+FFFD; otherwise joining the pieces of a line gives the line
    back exactly. ``max_bytes`` must be at least 4 (one character of any size).

    >>> split_message("hello world\\n\\nsecond", 8)
    ['hello ', 'world', 'second']
    """
    if max_bytes < 4:
        raise IrcTextError(f"max_bytes must be at least 4 (one UTF-8 character), not {max_bytes}")
    text = _SURROGATE_RE.sub("\ufffd", text.replace("\x00", ""))
    pieces: list[str] = []
    for line in _LINEBREAK_RE.split(text):
        if line:
            pieces.extend(_split_line(line.encode("utf-8"), max_bytes))
    return pieces


def _split_line(data: bytes, max_bytes: int) -> Iterator[str]:
    while len(data) > max_bytes:
        cut = max_bytes
        while data[cut] & 0xC0 == 0x80:  # never cut before a continuation byte
            cut -= 1
        space = data.rfind(b" ", 0, cut)
        if space >= max_bytes // 2:
            cut = space + 1
        yield data[:cut].decode("utf-8")
        data = data[cut:]
    if data:
        yield data.decode("utf-8")


def text_budget(
    command: str,
    target: str,
    nick: str,
    user_host: str | None = None,
    *,
    extra: int = 0,
) -> int:
    """How many bytes of text fit in ``:<nick>!<user@host> <command> <target> :<text>\\r\\n``.

    That is the line other clients receive, whose source prefix the server adds. When
    ``user_host`` is unknown a conservative guess (a 10-character user and a 63-character host)
    is used. ``extra`` is subtracted too (e.g. 9 for the CTCP ``\\x01ACTION `` ... ``\\x01``
    wrapper). Never less than 4 bytes.
    """
    if user_host is None:
        user_host = "u" * 10 + "@" + "h" * 63
    prefix = f":{nick}!{user_host} {command} {target} :"
    used = len(prefix.encode("utf-8", "replace")) + 2 + extra
    return max(4, LINE_LIMIT - used)


# -- names and classification ------------------------------------------------------------------

_RFC1459_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\~", "abcdefghijklmnopqrstuvwxyz{}|^")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def irc_lower(name: str, casemapping: str = "rfc1459") -> str:
    """``name`` lower-cased the way the server compares nicks and channels."""
    if casemapping == "ascii":
        return name.translate(_ASCII_LOWER)
    return name.translate(_RFC1459_LOWER)


def parse_ctcp_action(text: str) -> str | None:
    """The action text of a CTCP ACTION (``\\x01ACTION waves\\x01`` -> ``"waves"``), else None.

    A missing closing ``\\x01`` is tolerated, as many clients send it so.
    """
    if not text.startswith(CTCP + "ACTION"):
        return None
    body = text[len(CTCP + "ACTION") :]
    if body and not body.startswith((" ", CTCP)):
        return None  # e.g. "\x01ACTIONS": another CTCP
    body = body.removeprefix(" ")
    return body[:-1] if body.endswith(CTCP) else body


_NICK_CHARS = r"\w\[\]\\`^{}|-"


def mentions(text: str, nick: str) -> bool:
    """Whether ``text`` mentions ``nick`` as a word (formatting ignored, case-insensitive).

    ``"eevee: hi"`` and ``"hi @eevee!"`` mention ``eevee``; ``"eeveebot"`` does not.
    """
    if not nick:
        return False
    pattern = rf"(?<![{_NICK_CHARS}]){re.escape(irc_lower(nick))}(?![{_NICK_CHARS}])"
    return re.search(pattern, irc_lower(strip_formatting(text))) is not None
