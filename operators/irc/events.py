"""What the sans-I/O IRC client (:mod:`operators.irc.protocol`) reports, as plain data.

The client turns server lines into these events; the connector logs the connection events and
hands the chat events to :mod:`operators.irc.translate`, which makes bus envelopes of them.
Users carry the services account the client knows for them at that moment. Events are read,
never changed (they are not frozen only because frozen dataclasses are slower to build, and
one is built for every chat line).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ChatEvents",
    "CtcpQuery",
    "Event",
    "Invited",
    "IrcUser",
    "Joined",
    "Kicked",
    "LoggedIn",
    "Message",
    "NickChanged",
    "NickRefused",
    "OwnNickChanged",
    "Parted",
    "Quit",
    "Registered",
    "SaslFailed",
    "SaslMechanisms",
    "ServerError",
    "ServerNotice",
    "Style",
    "TopicChanged",
]

Style = Literal["message", "notice", "action"]
"""How a message was sent: PRIVMSG, NOTICE, or CTCP ACTION."""


@dataclass(slots=True)
class IrcUser:
    """A user as a line shows it: nick, ``user@host`` (when known) and services account."""

    nick: str
    host: str | None = None
    account: str | None = None


# -- the connection ----------------------------------------------------------------------------


@dataclass(slots=True)
class Registered:
    """The server accepted the client (001): ``nick`` is the bot's nick, ``server`` its name."""

    nick: str
    server: str


@dataclass(slots=True)
class SaslFailed:
    """SASL authentication failed (or could not be tried). The client has queued a ``QUIT``
    and ignores every later line: the connection must end."""

    reason: str


@dataclass(slots=True)
class LoggedIn:
    """The server logged the bot in to a services account (900)."""

    account: str | None


@dataclass(slots=True)
class SaslMechanisms:
    """The SASL mechanisms the server offers (908), after a mechanism it does not."""

    mechanisms: str


@dataclass(slots=True)
class OwnNickChanged:
    """The bot's nick is now ``nick``."""

    nick: str


@dataclass(slots=True)
class NickRefused:
    """The server refused a nick change after registration (no alternate is tried)."""

    nick: str
    reason: str


@dataclass(slots=True)
class ServerError:
    """The server sent ``ERROR`` (it is about to close the connection)."""

    message: str


@dataclass(slots=True)
class ServerNotice:
    """A PRIVMSG or NOTICE from the server itself, or before registration (not chat)."""

    source: str | None
    text: str


# -- chat --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Message:
    """A PRIVMSG, NOTICE or CTCP ACTION from a user, not the bot's own echo.

    ``room`` is the channel (without a STATUSMSG prefix such as ``@#ops``) or, for a private
    message, the sender's nick; ``text`` is the action's text for an action, else ``raw``.
    """

    user: IrcUser
    room: str
    private: bool
    text: str
    raw: str
    style: Style
    msgid: str | None
    reply_to: str | None = None
    """The ``msgid`` it answers (the IRCv3 ``+draft/reply`` client tag)."""


@dataclass(slots=True)
class CtcpQuery:
    """A CTCP request other than ACTION (``VERSION``, ``PING``...) sent by ``nick``."""

    nick: str
    command: str
    argument: str


@dataclass(slots=True)
class Joined:
    """``user`` joined ``room``."""

    room: str
    user: IrcUser


@dataclass(slots=True)
class Parted:
    """``user`` left ``room``."""

    room: str
    user: IrcUser
    reason: str | None


@dataclass(slots=True)
class Kicked:
    """``user`` kicked ``victim`` out of ``room``."""

    room: str
    user: IrcUser
    victim: IrcUser
    reason: str | None


@dataclass(slots=True)
class Quit:
    """``user`` left the network."""

    user: IrcUser
    reason: str | None


@dataclass(slots=True)
class NickChanged:
    """``user`` is now called ``nick``."""

    user: IrcUser
    nick: str


@dataclass(slots=True)
class TopicChanged:
    """``user`` set the topic of ``room``."""

    room: str
    user: IrcUser
    topic: str


@dataclass(slots=True)
class Invited:
    """``user`` invited ``invitee`` to ``room``."""

    room: str
    user: IrcUser
    invitee: IrcUser


ChatEvents = Joined | Parted | Kicked | Quit | NickChanged | TopicChanged | Invited
"""The events that become a ``ChatEvent`` on the bus."""

Event = (
    Registered
    | SaslFailed
    | LoggedIn
    | SaslMechanisms
    | OwnNickChanged
    | NickRefused
    | ServerError
    | ServerNotice
    | Message
    | CtcpQuery
    | ChatEvents
)
"""Everything :meth:`~operators.irc.protocol.IrcProtocol.feed` returns."""
