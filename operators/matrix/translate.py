"""Pure translation between Matrix events and the bus.

- Inbound: a room event as the homeserver sent it (a JSON object; decrypted already for an
  encrypted room) becomes a :class:`~eeveepy.protocol.models.ChatMessage` (``m.text``,
  ``m.notice``, ``m.emote``; never an edit or a redaction) or a
  :class:`~eeveepy.protocol.models.ChatEvent` (membership, topic). Anything else, and anything
  malformed (a body that is not a string, content that is not an object), is None: hostile
  events are dropped, never raised on.
- Outbound: :func:`render` turns an :class:`~eeveepy.protocol.models.OutgoingMessage` into
  :class:`MatrixOutbound` sends, and :func:`message_content` builds each one's event content
  (plain ``body`` always, HTML ``formatted_body``, ``m.in_reply_to`` the triggering event, in
  its thread when it was in one).

Room ids are opaque: nothing here reads a server name out of one (room version 12 ids have
none).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from eeveepy.connector.egress import Outbound
from eeveepy.errors import MatrixTargetError
from eeveepy.protocol.models import (
    ChatEvent,
    ChatEventType,
    ChatMessage,
    ChatUser,
    MessageStyle,
    OutgoingMessage,
)
from operators.matrix.markup import markdown_to_html, split_text

__all__ = [
    "PLATFORM",
    "MatrixOutbound",
    "chat_event",
    "chat_message",
    "message_content",
    "render",
    "thread_of",
]

PLATFORM: Final = "matrix"
HTML: Final = "org.matrix.custom.html"
MAX_BODY_BYTES: Final = 16_000
"""Longest plain body of one event: with its HTML twice over it stays under the 64 KiB limit."""

MSGTYPES: Final = {
    "m.text": MessageStyle.MESSAGE,
    "m.notice": MessageStyle.NOTICE,
    "m.emote": MessageStyle.ACTION,
}
STYLE_MSGTYPE: Final = {style: msgtype for msgtype, style in MSGTYPES.items()}

Names = Callable[[str], str]
"""A user id's display name in the room (the id itself when it has none)."""


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def relation(content: Mapping[str, Any]) -> dict[str, Any]:
    """The content's ``m.relates_to`` (an empty dict when absent or malformed)."""
    return _obj(content.get("m.relates_to"))


def thread_of(content: Mapping[str, Any]) -> str | None:
    """The root event id of the thread the message is in, if it is in one."""
    rel = relation(content)
    return _str(rel.get("event_id")) if rel.get("rel_type") == "m.thread" else None


def reply_of(content: Mapping[str, Any]) -> str | None:
    """The event id the message answers (``m.in_reply_to``), if any."""
    return _str(_obj(relation(content).get("m.in_reply_to")).get("event_id"))


def _strip_reply_fallback(body: str) -> str:
    """A reply's body without the quoted fallback (``> <@a:b> ...`` lines) older clients put."""
    lines = body.split("\n")
    n = 0
    while n < len(lines) and lines[n].startswith(">"):
        n += 1
    if n and n < len(lines) and lines[n] == "":
        return "\n".join(lines[n + 1 :])
    return body


def mentions(content: Mapping[str, Any], text: str, me: str, my_name: str) -> bool:
    """Whether the message mentions the bot ``me``: ``m.mentions``, or its id, localpart or
    display name as a word of the text."""
    ids = _obj(content.get("m.mentions")).get("user_ids")
    if isinstance(ids, list) and me in ids:
        return True
    lowered = text.casefold()
    for word in {me, me[1:].partition(":")[0], my_name}:
        if word and re.search(rf"(?<![\w@]){re.escape(word.casefold())}(?!\w)", lowered):
            return True
    return False


def chat_message(
    event: Mapping[str, Any],
    room_id: str,
    network: str,
    names: Names,
    *,
    me: str = "",
    my_name: str = "",
) -> ChatMessage | None:
    """The ``chat.in`` body of a room message event, or None when it is not one to publish:
    another event type or msgtype, an edit (``m.replace``), a redacted or malformed event."""
    if event.get("type") != "m.room.message":
        return None
    sender, event_id = _str(event.get("sender")), _str(event.get("event_id"))
    content = _obj(event.get("content"))
    msgtype, body = content.get("msgtype"), _str(content.get("body"))
    if sender is None or event_id is None or body is None or msgtype not in MSGTYPES:
        return None
    if relation(content).get("rel_type") == "m.replace" or "m.new_content" in content:
        return None  # an edit: the original was the command, if any
    text = _strip_reply_fallback(body) if reply_of(content) else body
    formatted = _str(content.get("formatted_body"))
    raw = formatted if formatted is not None and content.get("format") == HTML else None
    return ChatMessage(
        platform=PLATFORM,
        network=network,
        room=room_id,
        user=ChatUser(id=sender, name=names(sender), account=sender),
        text=text,
        raw=raw,
        style=MSGTYPES[msgtype],
        mentioned=mentions(content, text, me, my_name),
        message_id=event_id,
        reply_to=None if relation(content).get("is_falling_back") else reply_of(content),
        thread=thread_of(content),
    )


def chat_event(
    event: Mapping[str, Any], room_id: str, network: str, names: Names
) -> ChatEvent | None:
    """The ``chat.event`` body of a membership or topic event, or None for any other."""
    kind = event.get("type")
    sender = _str(event.get("sender"))
    content = _obj(event.get("content"))
    if sender is None:
        return None
    user = ChatUser(id=sender, name=names(sender), account=sender)
    if kind == "m.room.topic":
        topic = _str(content.get("topic"))
        return ChatEvent(
            platform=PLATFORM,
            network=network,
            event=ChatEventType.TOPIC,
            room=room_id,
            user=user,
            text=topic,
        )
    if kind != "m.room.member":
        return None
    subject = _str(event.get("state_key"))
    membership = content.get("membership")
    before = _obj(_obj(event.get("unsigned")).get("prev_content")).get("membership")
    if subject is None:
        return None
    target = ChatUser(id=subject, name=_str(content.get("displayname")) or subject, account=subject)
    reason = _str(content.get("reason"))
    what: ChatEventType
    text = reason
    if membership == "join" and before == "join":
        new_name = _str(content.get("displayname"))
        if new_name is None:
            return None  # an avatar change
        what, user, text = ChatEventType.NICK, target, new_name
    elif membership == "join":
        what, user = ChatEventType.JOIN, target
    elif membership == "invite":
        what = ChatEventType.INVITE
    elif membership == "leave" and subject == sender:
        what = ChatEventType.PART
    elif membership in ("leave", "ban") and before in ("join", "invite"):
        what = ChatEventType.KICK
        text = f"banned: {reason}" if membership == "ban" and reason else reason
    else:
        return None
    return ChatEvent(
        platform=PLATFORM,
        network=network,
        event=what,
        room=room_id,
        user=user,
        target=None if what in (ChatEventType.JOIN, ChatEventType.NICK) else target,
        text=text,
    )


@dataclass(frozen=True)
class MatrixOutbound(Outbound):
    """One Matrix message to send. ``kind`` is its msgtype; ``txn_id`` its transaction id,
    kept across retries so that the homeserver stores a repeated send once."""

    txn_id: str = ""


def render(out: OutgoingMessage, txn: Callable[[], str] | None = None) -> list[MatrixOutbound]:
    """The sends of ``out`` (none for empty text): one event, or several when the text is
    longer than an event may be (each answering ``reply_to``). ``txn`` makes the transaction
    ids of messages that answer nothing (default: random); an answer's are :func:`reply_txn`.

    Raises :class:`~eeveepy.errors.MatrixTargetError` for a target that is not a room id or
    alias, or (private) a user id.
    """
    target = out.target
    if out.private and not re.fullmatch(r"@[^:\s]+:\S+", target):
        raise MatrixTargetError(f"invalid Matrix user id {target!r} for a private message")
    if not out.private and not re.fullmatch(r"![^\s]+|#[^:\s]+:\S+", target):
        raise MatrixTargetError(f"invalid Matrix room {target!r} (a room id !... or #alias:server)")
    if not out.text.strip():
        return []
    make = txn or (lambda: uuid.uuid4().hex)
    msgtype = STYLE_MSGTYPE[out.style]
    pieces = split_text(out.text, MAX_BODY_BYTES)
    return [
        MatrixOutbound(
            target,
            piece,
            kind=msgtype,
            private=out.private,
            reply_to=out.reply_to,
            txn_id=make() if out.reply_to is None else reply_txn(out, n, piece),
        )
        for n, piece in enumerate(pieces)
    ]


def reply_txn(out: OutgoingMessage, n: int, piece: str) -> str:
    """The transaction id of piece ``n`` of an answer: the same for the same answer to the same
    event, so that an answer sent again after a restart (its send was not acknowledged to the
    bus) is stored once by the homeserver, which keeps a device's transaction ids."""
    key = "\0".join((out.reply_to or "", out.target, out.style.value, str(n), piece))
    return "r" + hashlib.sha256(key.encode()).hexdigest()[:32]


def message_content(item: Outbound, thread: str | None = None) -> dict[str, Any]:
    """The ``m.room.message`` content of ``item``: plain and HTML bodies, an answer to
    ``item.reply_to`` (in ``thread`` when the answered event was in one)."""
    content: dict[str, Any] = {
        "msgtype": item.kind or "m.text",
        "body": item.text,
        "format": HTML,
        "formatted_body": markdown_to_html(item.text),
    }
    if thread is not None:
        content["m.relates_to"] = {
            "rel_type": "m.thread",
            "event_id": thread,
            "is_falling_back": item.reply_to is None,
            "m.in_reply_to": {"event_id": item.reply_to or thread},
        }
    elif item.reply_to is not None:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": item.reply_to}}
    return content
