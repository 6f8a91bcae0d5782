"""What the IRC connector defuses or refuses before a line reaches the server (no I/O).

Chat-supplied input could make the bot do more than say something, in two ways:

- **Text with control characters.** ``\\x01`` starts a CTCP sequence: a user who gets the bot
  to echo ``\\x01VERSION\\x01`` makes it send a CTCP request to a whole channel (and
  ``\\x01ACTION ...\\x01`` an action). :func:`defuse` replaces ``\\x01`` and every other control
  character that is not an IRC formatting code (bell, escape, DEL...) by its visible Unicode
  control picture (``\\x01`` -> ``␁``); NUL is dropped, and CR / LF are left to split lines.
  :func:`outgoing_lines` builds the text of every PRIVMSG / NOTICE line the connector sends for
  a ``chat.out``: only there, and only when the message's style is an action, is the CTCP
  ``ACTION`` wrapper added.
- **Names that are not one channel or one nick.** ``JOIN 0`` parts every channel, ``#a,#b``
  names two channels, a space or a control character ends the parameter early.
  :func:`channel_problem`, :func:`nick_problem`, :func:`target_problem` and
  :func:`key_problem` say what is wrong with a name, or None when it is fine.

Nothing here raises on arbitrary input.
"""

from __future__ import annotations

import re
from typing import Final

from operators.irc.text import CTCP, markdown_to_irc, split_message

__all__ = [
    "ACTION_OVERHEAD",
    "DEFAULT_CHANTYPES",
    "MAX_CHANNEL_BYTES",
    "MAX_NICK_BYTES",
    "RFC_CHANTYPES",
    "channel_problem",
    "defuse",
    "key_problem",
    "nick_problem",
    "outgoing_lines",
    "target_problem",
]

ACTION_OVERHEAD: Final = len(CTCP + "ACTION " + CTCP)
"""Bytes the CTCP ``ACTION`` wrapper adds to a line (9)."""

DEFAULT_CHANTYPES: Final = "#&"
"""Channel prefixes of a server that announces no ``CHANTYPES`` (ISUPPORT)."""
RFC_CHANTYPES: Final = "#&+!"
"""Every channel prefix RFC 2812 knows: configured channels are checked against these before
the server's own ``CHANTYPES`` is known."""
MAX_CHANNEL_BYTES: Final = 200
"""RFC 1459's channel name limit, used when the server announces no ``CHANNELLEN``."""
MAX_NICK_BYTES: Final = 64
"""Nick length limit used when the server announces no ``NICKLEN``."""

_FORMATTING: Final = "\x02\x03\x04\x0f\x11\x16\x1d\x1e\x1f"
_KEEP: Final = _FORMATTING + "\t\r\n"
_DEFUSE: Final[dict[int, str | None]] = {
    **{c: chr(0x2400 + c) for c in range(0x20) if chr(c) not in _KEEP},  # U+2401 ␁ ...
    0x00: None,
    0x7F: "\u2421",  # ␡
}


def defuse(text: str) -> str:
    """``text`` with no control character that could do more than format it.

    ``\\x01`` (CTCP) and the other C0 controls that are no IRC formatting code become their
    Unicode control pictures (``\\x01`` -> ``␁``, ``\\x07`` -> ``␇``, ``\\x1b`` -> ``␛``, DEL ->
    ``␡``), so what was sent stays visible; NUL is dropped. Formatting codes (bold, colour...),
    tab, CR and LF are kept.

    >>> defuse("\\x01VERSION\\x01 \\x02hi\\x02\\x00")
    '␁VERSION␁ \\x02hi\\x02'
    """
    return text.translate(_DEFUSE)


def outgoing_lines(text: str, budget: int, *, action: bool = False) -> list[str]:
    """The text of each line sent for an outgoing message (the last parameter of the line).

    ``text`` is :func:`defuse`-d, its markdown turned into IRC formatting, and split into pieces
    of at most ``budget`` bytes (:func:`~operators.irc.text.split_message`: CR, LF and NUL never
    remain). With ``action`` each piece is wrapped as ``\\x01ACTION piece\\x01``, which adds
    :data:`ACTION_OVERHEAD` bytes beyond ``budget``. So a line holds ``\\x01`` only as that
    wrapper, and only for an action.
    """
    pieces = split_message(markdown_to_irc(defuse(text)), budget)
    if action:
        return [f"{CTCP}ACTION {piece}{CTCP}" for piece in pieces]
    return pieces


# -- names -------------------------------------------------------------------------------------

_BAD_ANYWHERE_RE = re.compile(r"[\x00-\x20\x7f-\x9f,]|\s")
_NICK_FORBIDDEN = "!@%*?:$#"


def _describe(char: str) -> str:
    if char == ",":
        return "a comma"
    if char.isspace():
        return "a space" if char == " " else f"whitespace U+{ord(char):04X}"
    return f"control character U+{ord(char):04X}"


def _common_problem(name: str, what: str, max_bytes: int) -> str | None:
    if not name:
        return f"an empty {what}"
    bad = _BAD_ANYWHERE_RE.search(name)
    if bad is not None:
        return f"{what} {name!r} contains {_describe(bad.group())}"
    size = len(name.encode("utf-8", "replace"))
    if size > max_bytes:
        return f"{what} {name[:20]!r}... is {size} bytes long (at most {max_bytes})"
    return None


def channel_problem(
    name: str, chantypes: str = DEFAULT_CHANTYPES, max_bytes: int = MAX_CHANNEL_BYTES
) -> str | None:
    """Why ``name`` is not one channel name the bot may use, or None when it is one.

    A channel name starts with one of ``chantypes`` (the server's ``CHANTYPES``), holds no
    comma, whitespace or control character, and is at most ``max_bytes`` bytes of UTF-8.
    ``0`` is refused with its own reason: ``JOIN 0`` would leave every channel.

    >>> channel_problem("0")
    "'0' is not a channel (JOIN 0 would leave every channel)"
    >>> channel_problem("#ops") is None
    True
    """
    if name == "0":
        return "'0' is not a channel (JOIN 0 would leave every channel)"
    problem = _common_problem(name, "channel", max_bytes)
    if problem is not None:
        return problem
    if name[0] not in chantypes:
        prefixes = " ".join(chantypes) or "none"
        return f"channel {name!r} does not start with a channel prefix ({prefixes})"
    return None


def nick_problem(
    name: str, chantypes: str = DEFAULT_CHANTYPES, max_bytes: int = MAX_NICK_BYTES
) -> str | None:
    """Why ``name`` is not one nick, or None when it is one.

    Lenient on purpose (servers differ, some allow non-ASCII nicks): refused are a comma,
    whitespace, control characters, ``! @ % * ? : $ #`` (masks, ``nick@server`` and
    ``nick%host`` targets), a leading channel prefix, digit or ``-``, and more than
    ``max_bytes`` bytes.

    >>> nick_problem("alice") is None
    True
    """
    problem = _common_problem(name, "nick", max_bytes)
    if problem is not None:
        return problem
    if name[0] in chantypes:
        return f"nick {name!r} starts with a channel prefix"
    if name[0].isdigit() or name[0] == "-":
        return f"nick {name!r} starts with a digit or '-'"
    bad = next((c for c in name if c in _NICK_FORBIDDEN), None)
    if bad is not None:
        return f"nick {name!r} contains {bad!r}"
    return None


def target_problem(
    target: str,
    chantypes: str = DEFAULT_CHANTYPES,
    channel_bytes: int = MAX_CHANNEL_BYTES,
    nick_bytes: int = MAX_NICK_BYTES,
) -> str | None:
    """Why ``target`` (of a PRIVMSG or NOTICE) is not one channel or one nick, or None.

    >>> target_problem("#a,#b")
    "channel '#a,#b' contains a comma"
    """
    if target[:1] and target[0] in chantypes:
        return channel_problem(target, chantypes, channel_bytes)
    if target == "0":
        return channel_problem(target)
    return nick_problem(target, chantypes, nick_bytes)


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be a channel key (a comma, whitespace, a control character), or None.

    A comma would shift the keys of the channels joined after it in one ``JOIN``. The key
    itself is a secret and is not quoted in the reason.
    """
    bad = _BAD_ANYWHERE_RE.search(key)
    if bad is not None:
        return f"a channel key cannot contain {_describe(bad.group())}"
    return None if key else "an empty channel key"
