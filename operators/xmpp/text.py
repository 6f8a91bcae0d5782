"""XMPP text with no I/O: JIDs, XML-safe text, message styling, splitting.

- :func:`jid_problem` says what is wrong with a JID (RFC 7622, by slixmpp's parser),
  :func:`resource_problem` with a resource or a room nick, and
  :func:`fold_jid` compares JIDs as XMPP does (local part and domain case-folded, the
  resource, a MUC nick, kept as it is).
- :func:`xml_safe` makes any string sendable: XML 1.0 cannot carry most C0 control
  characters, U+FFFE/U+FFFF or lone surrogates, and a server closes the stream of a client
  that sends them. Control characters become their visible Control Pictures (``␁``), the rest
  U+FFFD.
- :func:`to_styling` turns the simple markdown every connector accepts (``**bold**``,
  ``*italic*``, ``_italic_``, ``~~strike~~``, `` `code` ``) into XEP-0393 message styling
  (``*bold*``, ``_italic_``, ``~strike~``, `` `code` ``); :func:`strip_markdown` removes it.
- :func:`split_body` keeps a long text whole up to a byte budget (of the text as sent,
  XML-escaped) and cuts beyond it at line, then word boundaries, never inside a UTF-8
  character.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Final
from xml.sax.saxutils import escape, unescape

from slixmpp import JID
from slixmpp.jid import InvalidJID

from eeveepy.errors import ConnectorError

__all__ = [
    "fold_jid",
    "jid_problem",
    "mentions",
    "resource_problem",
    "split_body",
    "strip_markdown",
    "to_styling",
]

_UNSENDABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def jid_problem(jid: str, *, bare: bool) -> str | None:
    """What is wrong with ``jid``, or None. ``bare``: it must be ``local@domain`` exactly (an
    account or a room); otherwise a domain alone or a full JID is fine too."""
    if not jid or jid != jid.strip():
        return "empty or surrounded by spaces"
    try:
        parsed = JID(jid)
    except InvalidJID as exc:
        return str(exc)
    if bare and (not parsed.user or parsed.resource):
        return "needs the form local@domain, with no /resource"
    return None


def resource_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a resource (the account's, or a nick in a room: the
    resource of ``room@service/nick``), or None."""
    if not name or name != name.strip():
        return "empty or surrounded by spaces"
    problem = jid_problem(f"room@example.org/{name}", bare=False)
    return None if problem is None else f"not a valid resource: {problem}"


def fold_jid(jid: str) -> str:
    """``jid`` as XMPP compares it: local part and domain normalised, the resource kept."""
    try:
        return str(JID(jid))
    except InvalidJID:
        bare, slash, resource = jid.partition("/")
        return bare.lower() + slash + resource


def xml_safe(text: str) -> str:
    """``text`` with every character XML 1.0 cannot carry replaced (never raises)."""
    return _UNSENDABLE.sub(_picture, text)


def _picture(m: re.Match[str]) -> str:
    c = ord(m.group())
    return chr(0x2400 + c) if c < 0x20 else "\ufffd"


_CODE = re.compile(r"(```.+?```|`[^`\n]+`)", re.DOTALL)  # a fenced block, or a code span
_FENCE_INFO = re.compile(r"[\w+#.-]*")  # the language after an opening fence
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_STAR_ITALIC = re.compile(r"(?<![*\w])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![*\w])")
_UNDERSCORE_ITALIC = re.compile(r"(?<![_\w])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![_\w])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_BOLD_MARK = "\x00b"  # placeholders: a bold span must not be read again as italic
_UNMARK = re.compile("\x00([\x00b])")  # the text's own NULs are doubled, apart from the marks


def to_styling(text: str) -> str:
    """Simple markdown as XEP-0393 styling; code spans and fenced code blocks (XEP-0393
    preformatted text) are left exactly as they are.

    >>> to_styling("**hi** *there* ~~no~~ `a*b*c`")
    '*hi* _there_ ~no~ `a*b*c`'
    """
    return _each_outside_code(text, _styled)


def strip_markdown(text: str) -> str:
    """Simple markdown removed (for ``styling = false``); code spans lose their backticks,
    fenced code blocks their fences.

    >>> strip_markdown("**hi** _there_ `x`")
    'hi there x'
    """
    return _each_outside_code(text, _plain, _unquoted)


def _each_outside_code(
    text: str, fn: Callable[[str], str], code: Callable[[str], str] = lambda c: c
) -> str:
    parts = _CODE.split(text)
    return "".join(code(p) if n % 2 else fn(p) for n, p in enumerate(parts))


def _unquoted(code: str) -> str:
    """A code span without its backticks; a fenced block without its fences (and language)."""
    if not code.startswith("```"):
        return code[1:-1]
    body = code[3:-3]
    info, newline, rest = body.partition("\n")
    if newline and _FENCE_INFO.fullmatch(info):
        body = rest
    return body.removesuffix("\n")


def _styled(text: str) -> str:
    text = text.replace("\x00", "\x00\x00")
    text = _BOLD.sub(lambda m: _BOLD_MARK + m.group(1) + _BOLD_MARK, text)
    text = _STAR_ITALIC.sub(lambda m: "_" + m.group(1) + "_", text)
    text = _STRIKE.sub(lambda m: "~" + m.group(1) + "~", text)
    return _UNMARK.sub(lambda m: "*" if m.group(1) == "b" else "\x00", text)


def _plain(text: str) -> str:
    for pattern in (_BOLD, _STAR_ITALIC, _UNDERSCORE_ITALIC, _STRIKE):
        text = pattern.sub(lambda m: m.group(1), text)
    return text


def mentions(text: str, nick: str) -> bool:
    """True when ``text`` names ``nick`` as a word (case-insensitive)."""
    if not nick:
        return False
    return re.search(rf"(?<![\w-]){re.escape(nick)}(?![\w-])", text, re.IGNORECASE) is not None


def split_body(text: str, max_bytes: int) -> list[str]:
    """``text`` in pieces of at most ``max_bytes`` UTF-8 bytes once XML-escaped, as they go
    on the wire (``text`` itself when it fits): ``"`` is sent as six bytes (``&quot;``).

    Beyond the budget, whole lines are packed into each piece; a line too long alone is cut
    at its last space in the second half of the budget, else before the character that does
    not fit. Blank pieces are dropped. ``text`` must be :func:`xml_safe` (no surrogates);
    ``max_bytes`` must be at least 6 (one escaped character of any size).

    >>> split_body("one\\ntwo\\nthree", 8)
    ['one\\ntwo', 'three']
    >>> split_body("<<<<", 8)
    ['<<', '<<']
    """
    if max_bytes < 6:
        raise ConnectorError(
            f"max_bytes must be at least 6 (one escaped UTF-8 character), not {max_bytes}"
        )
    whole = escape(text, _QUOTES).encode("utf-8")
    if len(whole) <= max_bytes:
        return [text] if whole.strip() else []
    pieces: list[bytes] = []
    current = b""
    for line in text.split("\n"):
        data = escape(line, _QUOTES).encode("utf-8")
        candidate = current + b"\n" + data if current else data
        if len(candidate) <= max_bytes:
            current = candidate
            continue
        if current:
            pieces.append(current)
        chunks = list(_cut(data, max_bytes)) or [b""]
        pieces.extend(chunks[:-1])
        current = chunks[-1]
    pieces.append(current)
    return [unescape(p.decode("utf-8"), _UNQUOTES) for p in pieces if p.strip()]


_QUOTES: Final = {'"': "&quot;", "'": "&apos;"}  # and &, <, >: what the stream escapes
_UNQUOTES: Final = {v: k for k, v in _QUOTES.items()}


def _cut(data: bytes, max_bytes: int) -> Iterator[bytes]:
    while len(data) > max_bytes:
        cut = max_bytes
        while cut > 0 and data[cut] & 0xC0 == 0x80:  # never before a continuation byte
            cut -= 1
        amp = data.rfind(b"&", 0, cut)
        if amp >= 0 and data.find(b";", amp, cut) < 0:
            cut = amp  # nor inside an escape
        space = data.rfind(b" ", 0, cut)
        if space >= max_bytes // 2:
            cut = space + 1
        yield data[:cut]
        data = data[cut:]
    if data:
        yield data
