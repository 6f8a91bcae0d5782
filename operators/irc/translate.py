"""Pure translation between IRC and the bus: events to envelopes, outgoing messages to lines.

- Inbound: a :class:`~operators.irc.events.Message` becomes a
  :class:`~eeveepy.protocol.models.ChatMessage` (formatting stripped, mentions of the bot
  found), a join, part, kick, quit, nick change, topic or invite a
  :class:`~eeveepy.protocol.models.ChatEvent`.
- Outbound: :func:`render` turns an :class:`~eeveepy.protocol.models.OutgoingMessage` into
  the PRIVMSG / NOTICE lines to queue: the target must be one channel or one nick of the
  server (else :class:`~eeveepy.errors.InvalidTargetError`), markdown becomes IRC formatting,
  and the text is split to fit the 512-byte line as the server will relay it
  (:func:`~operators.irc.safety.outgoing_lines`: no CTCP but an action's own wrapper).
- :func:`ctcp_reply` answers ``VERSION``, ``PING``, ``TIME`` and ``CLIENTINFO``.

Nothing here publishes, writes or reads a clock it is not given.
"""

from __future__ import annotations

import time
from typing import Final, assert_never

from eeveepy.connector.egress import Outbound
from eeveepy.errors import InvalidTargetError
from eeveepy.protocol.models import (
    ChatEvent,
    ChatEventType,
    ChatMessage,
    ChatUser,
    MessageStyle,
    OutgoingMessage,
)
from operators.irc.events import (
    ChatEvents,
    CtcpQuery,
    Invited,
    IrcUser,
    Joined,
    Kicked,
    Message,
    NickChanged,
    Parted,
    Quit,
    TopicChanged,
)
from operators.irc.safety import ACTION_OVERHEAD, outgoing_lines
from operators.irc.state import ServerState
from operators.irc.text import CTCP, mentions, sanitize, strip_formatting, text_budget

__all__ = [
    "PLATFORM",
    "VERSION",
    "chat_event",
    "chat_message",
    "chat_user",
    "connection_event",
    "ctcp_reply",
    "render",
]

PLATFORM: Final = "irc"
VERSION: Final = "eevee IRC connector"
"""The answer to a CTCP VERSION."""


def chat_user(user: IrcUser) -> ChatUser:
    """The bus's view of an IRC user (its nick is its id)."""
    return ChatUser(id=user.nick, name=user.nick, host=user.host, account=user.account)


def chat_message(msg: Message, network: str, own_nick: str) -> ChatMessage:
    """The ``chat.in`` body of a message the bot (``own_nick``) received."""
    return ChatMessage(
        platform=PLATFORM,
        network=network,
        room=msg.room,
        user=chat_user(msg.user),
        text=strip_formatting(msg.text),
        raw=msg.raw,
        style=MessageStyle(msg.style),
        private=msg.private,
        mentioned=mentions(msg.text, own_nick),
        message_id=msg.msgid,
        reply_to=msg.reply_to,
    )


def chat_event(event: ChatEvents, network: str) -> ChatEvent:
    """The ``chat.event`` body of a join, part, kick, quit, nick change, topic or invite."""
    room: str | None = None
    target: IrcUser | None = None
    text: str | None = None
    match event:
        case Joined():
            kind, room = ChatEventType.JOIN, event.room
        case Parted():
            kind, room, text = ChatEventType.PART, event.room, event.reason
        case Kicked():
            kind, room, target, text = ChatEventType.KICK, event.room, event.victim, event.reason
        case Quit():
            kind, text = ChatEventType.QUIT, event.reason
        case NickChanged():
            kind, text = ChatEventType.NICK, event.nick
        case TopicChanged():
            kind, room, text = ChatEventType.TOPIC, event.room, event.topic
        case Invited():
            kind, room, target = ChatEventType.INVITE, event.room, event.invitee
        case _:
            assert_never(event)
    return ChatEvent(
        platform=PLATFORM,
        network=network,
        event=kind,
        room=room,
        user=chat_user(event.user),
        target=None if target is None else chat_user(target),
        text=text,
    )


def connection_event(kind: ChatEventType, me: IrcUser, network: str, text: str) -> ChatEvent:
    """A ``connected`` or ``disconnected`` event about the bot itself."""
    return ChatEvent(platform=PLATFORM, network=network, event=kind, user=chat_user(me), text=text)


def render(out: OutgoingMessage, state: ServerState) -> list[Outbound]:
    """The lines that send ``out`` on this server (none for empty text): each an
    :class:`Outbound` whose ``kind`` is the command (PRIVMSG or NOTICE).

    Raises :class:`~eeveepy.errors.InvalidTargetError` when the target is not one channel or
    one nick: nothing may be sent then.
    """
    target = out.target
    problem = state.target_problem(target)
    if problem is not None:
        raise InvalidTargetError(target, problem)
    command = "NOTICE" if out.style is MessageStyle.NOTICE else "PRIVMSG"
    action = out.style is MessageStyle.ACTION
    # The server relays the line with the bot's full prefix: budget for the longest nick the
    # bot may have (NICKLEN), so a nick change between queueing and sending cannot overflow.
    nicklen = state.isupport_int("NICKLEN", 0)
    nick = state.nick or state.want_nick
    nick = nick + "x" * max(0, min(nicklen, 64) - len(nick))
    extra = ACTION_OVERHEAD if action else 0
    budget = text_budget(command, target, nick, state.user_host, extra=extra)
    return [
        Outbound(target, piece, kind=command)
        for piece in outgoing_lines(out.text, budget, action=action)
    ]


def ctcp_reply(query: CtcpQuery, now: time.struct_time | None = None) -> Outbound | None:
    """The NOTICE answering a CTCP request, or None for one the bot does not answer."""
    answers = {
        "VERSION": VERSION,
        "PING": query.argument,
        "TIME": time.strftime("%a %b %d %H:%M:%S %Y", now or time.localtime()),
        "CLIENTINFO": "ACTION CLIENTINFO PING TIME VERSION",
    }
    if query.command not in answers:
        return None
    answer = f"{query.command} {answers[query.command]}".rstrip()
    text = f"{CTCP}{sanitize(answer).replace(CTCP, '')}{CTCP}"
    return Outbound(query.nick, text, kind="NOTICE")
