"""IRC text handling with no I/O: formatting, splitting, parsing, flood control.

Everything the IRC connector (``operators/irc.py``) does to text before it reaches the bus or
the socket lives here, as pure functions and two small data structures, so it can be tested
without a server:

- :func:`strip_formatting` removes mIRC formatting codes (bold, colours, ...);
  :func:`markdown_to_irc` turns simple markdown (``**bold**``, ``*italic*``, ``_italic_``,
  `` `code` ``) into them.
- :func:`sanitize` makes a string safe as one IRC parameter (no CR, LF or NUL);
  :func:`split_message` cuts text into lines that fit the 512-byte line limit without ever
  breaking a UTF-8 character; :func:`text_budget` says how many bytes of text fit.
- :func:`parse_line` / :func:`format_line` read and write protocol lines (IRCv3 tags
  included); :func:`format_line` is the only way the connector builds a line, and it can never
  produce a second command.
- :func:`parse_ctcp_action` and :func:`mentions` classify messages.
- :class:`TokenBucket` and :class:`FairQueue` implement egress flood control: a rate limit
  with bursts, and round-robin fairness across targets with FIFO order per target.

No function here raises on arbitrary text input; the only error is :class:`IrcTextError` for
programming mistakes (an impossible byte budget, a command that is not a command).
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from eeveepy.errors import EeveeError

__all__ = [
    "LINE_LIMIT",
    "FairQueue",
    "IrcLine",
    "IrcTextError",
    "TokenBucket",
    "format_line",
    "irc_lower",
    "markdown_to_irc",
    "mentions",
    "parse_ctcp_action",
    "parse_line",
    "sanitize",
    "split_message",
    "split_source",
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

T = TypeVar("T")


class IrcTextError(EeveeError):
    """A programming error in a call to this module (never raised for odd input text)."""


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


# -- protocol lines ----------------------------------------------------------------------------


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


_RFC1459_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\~", "abcdefghijklmnopqrstuvwxyz{}|^")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def irc_lower(name: str, casemapping: str = "rfc1459") -> str:
    """``name`` lower-cased the way the server compares nicks and channels."""
    if casemapping == "ascii":
        return name.translate(_ASCII_LOWER)
    return name.translate(_RFC1459_LOWER)


# -- classification ----------------------------------------------------------------------------


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


# -- flood control -----------------------------------------------------------------------------


class TokenBucket:
    """A token bucket: ``rate`` tokens per ``period`` seconds, holding at most ``burst``.

    ``rate = 0`` disables the limit (:meth:`delay` is always 0). ``clock`` returns seconds
    (default :func:`time.monotonic`); inject a fake one in tests. The bucket starts full.
    """

    def __init__(
        self,
        rate: int,
        period: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate < 0 or burst < 1 or not period > 0:
            raise IrcTextError(
                f"invalid token bucket: rate={rate} (>= 0), period={period} (> 0), "
                f"burst={burst} (>= 1)"
            )
        self.rate = rate
        self.period = period
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    @property
    def enabled(self) -> bool:
        """False when the bucket lets everything through (``rate == 0``)."""
        return self.rate > 0

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate / self.period)

    @property
    def tokens(self) -> float:
        """Tokens available now."""
        if not self.enabled:
            return float(self.burst)
        self._refill()
        return self._tokens

    def delay(self) -> float:
        """Seconds until a token is available (0 when one is available now)."""
        if not self.enabled:
            return 0.0
        self._refill()
        if self._tokens >= 1.0:
            return 0.0
        return (1.0 - self._tokens) * self.period / self.rate

    def try_take(self) -> bool:
        """Take a token if one is available now; return whether it was taken."""
        if not self.enabled:
            return True
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class FairQueue(Generic[T]):
    """Per-target FIFO queues served round-robin.

    :meth:`put` appends to its target's queue; :meth:`get` takes the oldest item of the next
    target in turn, so a busy target cannot starve the others while each target's order is
    kept. Targets are compared by a key (default: as given; the connector passes
    :func:`irc_lower`).
    """

    def __init__(self, key: Callable[[str], str] = str) -> None:
        self._key = key
        self._queues: OrderedDict[str, deque[tuple[str, T]]] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    @property
    def targets(self) -> list[str]:
        """Keys of the targets with queued items, next to be served first."""
        return list(self._queues)

    def put(self, target: str, item: T) -> None:
        """Queue ``item`` for ``target``."""
        key = self._key(target)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append((target, item))
        self._size += 1

    def get(self) -> tuple[str, T] | None:
        """``(target, item)``: the next item in round-robin order, or None when empty."""
        if not self._queues:
            return None
        key, queue = next(iter(self._queues.items()))
        target, item = queue.popleft()
        self._size -= 1
        if queue:
            self._queues.move_to_end(key)
        else:
            del self._queues[key]
        return target, item

    def put_front(self, target: str, item: T) -> None:
        """Put ``item`` back at the head of its target's queue, that target served next."""
        key = self._key(target)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.appendleft((target, item))
        self._queues.move_to_end(key, last=False)
        self._size += 1

    def drop_oldest(self) -> tuple[str, T] | None:
        """Remove and return the oldest item of the longest queue (to bound memory)."""
        if not self._queues:
            return None
        key = max(self._queues, key=lambda k: len(self._queues[k]))
        queue = self._queues[key]
        target, item = queue.popleft()
        self._size -= 1
        if not queue:
            del self._queues[key]
        return target, item

    def clear(self) -> None:
        """Drop everything queued."""
        self._queues.clear()
        self._size = 0
