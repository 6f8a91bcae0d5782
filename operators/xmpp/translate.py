"""Pure translation between XMPP and the bus: stanzas to envelopes, outgoing messages to sends.

- Inbound: :func:`room_message` and :func:`direct_message` turn a :class:`~operators.xmpp.
  stanzas.MessageIn` into a :class:`~eeveepy.protocol.models.ChatMessage`, or None when it
  must not reach the bus: the bot's own reflection, history replayed on joining a room
  (anything before the room's subject, or delayed by the room), a one-to-one message a server
  kept longer than ``max_delay``. A room occupant's identity is the real bare JID when the
  room reveals it, else the occupant JID ``room@service/nick``, never the nick alone.
  ``/me`` is an action. :func:`change_event` turns a room :class:`~operators.xmpp.muc.Change`
  into a :class:`~eeveepy.protocol.models.ChatEvent`.
- Outbound: :func:`render` turns an :class:`~eeveepy.protocol.models.OutgoingMessage` into
  the messages to send: the target checked (a JID), markdown as XEP-0393 styling (or removed),
  characters XML cannot carry replaced, a text longer than ``max_bytes`` split.

Nothing here publishes, sends or reads a clock it is not given.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from eeveepy.connector.egress import Outbound
from eeveepy.errors import RefusedError
from eeveepy.protocol.models import (
    ChatEvent,
    ChatEventType,
    ChatMessage,
    ChatUser,
    MessageStyle,
    OutgoingMessage,
)
from operators.xmpp.muc import Change, ChangeKind, Muc
from operators.xmpp.stanzas import MessageIn
from operators.xmpp.text import (
    fold_jid,
    jid_problem,
    mentions,
    split_body,
    strip_markdown,
    to_styling,
    xml_safe,
)

__all__ = ["PLATFORM", "change_event", "direct_message", "render", "room_message"]

PLATFORM: Final = "xmpp"
ACTION: Final = "/me "
GROUPCHAT: Final = "groupchat"
CHAT: Final = "chat"

_EVENTS: Final = {
    ChangeKind.JOIN: ChatEventType.JOIN,
    ChangeKind.JOINED: ChatEventType.JOIN,
    ChangeKind.PART: ChatEventType.PART,
    ChangeKind.LEFT: ChatEventType.PART,
    ChangeKind.KICK: ChatEventType.KICK,
    ChangeKind.KICKED: ChatEventType.KICK,
    ChangeKind.NICK: ChatEventType.NICK,
}


def _text(body: str) -> tuple[str, MessageStyle]:
    if body.startswith(ACTION):
        return body[len(ACTION) :], MessageStyle.ACTION
    return body, MessageStyle.MESSAGE


def occupant(room: str, nick: str, real_jid: str | None) -> ChatUser:
    """A room occupant as the bus sees it: the real JID is the identity when it is known."""
    return ChatUser(id=real_jid or f"{room}/{nick}", name=nick, account=real_jid)


def _own(me: str) -> tuple[str, str]:
    bare = fold_jid(me)
    return bare, bare.partition("@")[2]


def room_message(msg: MessageIn, muc: Muc, network: str, me: str) -> ChatMessage | None:
    """The ``chat.in`` body of a groupchat message, or None (own, history, not in the room).

    ``me`` is the bot's bare JID: a message stored for it while its stream was away carries a
    delay from it (from its server, with older stream management modules) and is live; the
    room's history carries a delay from the room, and anything else delayed counts as history.
    """
    room, _, nick = msg.sender.partition("/")
    state = muc.get(room)
    if msg.body is None or not nick or state is None or not state.joined:
        return None
    if state.nick == nick or not state.live:
        return None
    if msg.delayed and fold_jid(msg.delay_from or "") not in _own(me):
        return None
    text, style = _text(msg.body)
    return ChatMessage(
        platform=PLATFORM,
        network=network,
        room=state.jid,
        user=occupant(state.jid, nick, state.occupants.get(nick)),
        text=text,
        raw=msg.body,
        style=style,
        mentioned=mentions(text, state.nick),
        message_id=msg.id,
        reply_to=msg.reply_to,
        thread=msg.thread,
    )


def direct_message(
    msg: MessageIn, muc: Muc, network: str, now: datetime, max_delay: float
) -> ChatMessage | None:
    """The ``chat.in`` body of a one-to-one message (or a private one through a room), or
    None (no body, kept too long by a server, a notice of a room itself)."""
    if msg.body is None or not msg.sender:
        return None
    if msg.delayed and msg.stamp is not None and now - msg.stamp > timedelta(seconds=max_delay):
        return None  # kept by a server while the bot was away, too long ago to act on
    text, style = _text(msg.body)
    room_jid, _, nick = msg.sender.partition("/")
    # From the JID of a room the bot is in: through that room, whether or not the room
    # marked it (muc#user) as it should; the room's JID is nobody's identity.
    state = muc.get(room_jid)
    if state is not None and not nick:
        return None  # the room's own notice (a form, a decline): nobody to answer
    if state is not None:
        user = occupant(state.jid, nick, state.occupants.get(nick))
        reply_to = msg.sender  # a private message through the room goes back the same way
    else:
        user = ChatUser(id=room_jid, name=room_jid.partition("@")[0] or room_jid, account=room_jid)
        reply_to = room_jid
    return ChatMessage(
        platform=PLATFORM,
        network=network,
        room=reply_to,
        user=user,
        text=text,
        raw=msg.body,
        style=style,
        private=True,
        message_id=msg.id,
        reply_to=msg.reply_to,
        thread=msg.thread,
    )


def change_event(change: Change, network: str) -> ChatEvent | None:
    """The ``chat.event`` body of a room change (None for a refused join: it is answered)."""
    event = _EVENTS.get(change.kind)
    if event is None:
        return None
    who = occupant(change.room, change.nick, change.real_jid)
    kicked = event is ChatEventType.KICK
    return ChatEvent(
        platform=PLATFORM,
        network=network,
        event=event,
        room=change.room,
        user=None if kicked else who,
        target=who if kicked else None,
        text=change.text,
    )


def render(out: OutgoingMessage, *, max_bytes: int, styling: bool) -> list[Outbound]:
    """The messages that send ``out``: one, or several when the text is over ``max_bytes``."""
    problem = jid_problem(out.target, bare=not out.private)
    if problem is not None:
        what = "a JID" if out.private else "a room JID (room@service)"
        raise RefusedError(f"target {out.target!r} is not {what}: {problem}")
    text = to_styling(out.text) if styling else strip_markdown(out.text)
    text = xml_safe(text.replace("\r\n", "\n").replace("\r", "\n"))
    prefix = ACTION if out.style is MessageStyle.ACTION else ""
    budget = max_bytes - len(prefix.encode())
    kind = CHAT if out.private else GROUPCHAT
    return [
        Outbound(target=out.target, text=prefix + piece, kind=kind, private=out.private)
        for piece in split_body(text, budget)
    ]
