"""What the connector reads from a received stanza, as plain frozen data (no I/O).

The XMPP library parses the stream; this module reads the few parts the connector uses
straight from the stanza's XML element, so that a stanza missing any of them (a hostile or
broken peer) yields ``None`` fields, never an exception: :func:`read_message`,
:func:`read_presence`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from xml.etree.ElementTree import Element

from operators.xmpp.text import jid_problem

__all__ = ["Invite", "MessageIn", "PresenceIn", "read_message", "read_presence"]

CLIENT: Final = "{jabber:client}"
MUC_USER: Final = "{http://jabber.org/protocol/muc#user}"
DELAY: Final = "{urn:xmpp:delay}delay"
STANZA_ID: Final = "{urn:xmpp:sid:0}stanza-id"
CONFERENCE: Final = "{jabber:x:conference}x"
STANZAS: Final = "{urn:ietf:params:xml:ns:xmpp-stanzas}"
REPLY: Final = "{urn:xmpp:reply:0}reply"
"""XEP-0461: the message answers the one whose id is ``@id``."""


@dataclass(frozen=True)
class Invite:
    """An invitation to a room: mediated by the room (XEP-0045) or direct (XEP-0249)."""

    room: str
    inviter: str
    """Who invites: for an invitation through a room, only what the room claims."""
    reason: str | None = None
    password: str | None = None
    via_room: bool = False
    """Sent by the room on the inviter's behalf (XEP-0045), not by the inviter (XEP-0249)."""


@dataclass(frozen=True)
class MessageIn:
    """A received ``<message/>``."""

    kind: str
    """``groupchat``, ``chat``, ``normal``, ``headline`` or ``error``."""
    sender: str
    body: str | None = None
    subject: str | None = None
    id: str | None = None
    delay_from: str | None = None
    """Who delayed it (``delay/@from``): a room replaying history, a server that stored it."""
    stamp: datetime | None = None
    """When it was first sent (``delay/@stamp``), always with a time zone."""
    delayed: bool = False
    muc_private: bool = False
    """A private message through a room (``room@service/nick``)."""
    invite: Invite | None = None
    """An invitation to a room that can be joined (its JID is ``room@service``)."""
    error: str | None = None
    reply_to: str | None = None
    """The id of the message it answers (XEP-0461 ``<reply id=.../>``)."""
    thread: str | None = None
    """Its ``<thread/>``: the conversation thread it belongs to."""


@dataclass(frozen=True)
class PresenceIn:
    """A received ``<presence/>`` (the connector reads the ones from rooms)."""

    sender: str
    available: bool
    codes: frozenset[str] = frozenset()
    real_jid: str | None = None
    new_nick: str | None = None
    reason: str | None = None
    """Why (a kick's ``item/reason``; else, when leaving, the presence's ``status``)."""
    error: str | None = None


def _text(el: Element | None) -> str | None:
    return None if el is None else (el.text or "")


def _stamp(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    # XEP-0082 requires a zone; one without is read as UTC, so that a stamp can always be
    # compared with the (aware) clock.
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def _error(stanza: Element) -> str | None:
    err = stanza.find(f"{CLIENT}error")
    if err is None:
        return None
    conditions = [c.tag.removeprefix(STANZAS) for c in err if c.tag.startswith(STANZAS)]
    text = next((c.text for c in err if c.tag == f"{STANZAS}text" and c.text), None)
    condition = next((c for c in conditions if c != "text"), "undefined-condition")
    return f"{condition}: {text}" if text else condition


def read_message(stanza: Element) -> MessageIn:
    """The parts of a ``<message/>`` the connector uses."""
    delay = stanza.find(DELAY)
    user_x = stanza.find(f"{MUC_USER}x")
    sid = stanza.find(STANZA_ID)
    reply = stanza.find(REPLY)
    return MessageIn(
        kind=stanza.get("type") or "normal",
        sender=stanza.get("from") or "",
        body=_text(stanza.find(f"{CLIENT}body")),
        subject=_text(stanza.find(f"{CLIENT}subject")),
        id=(sid.get("id") if sid is not None else None) or stanza.get("id"),
        delay_from=delay.get("from") if delay is not None else None,
        stamp=_stamp(delay.get("stamp")) if delay is not None else None,
        delayed=delay is not None,
        muc_private=user_x is not None and (stanza.get("type") == "chat"),
        invite=_invite(stanza, user_x),
        error=_error(stanza) if stanza.get("type") == "error" else None,
        reply_to=(reply.get("id") or None) if reply is not None else None,
        thread=_text(stanza.find(f"{CLIENT}thread")) or None,
    )


def _invite(stanza: Element, user_x: Element | None) -> Invite | None:
    invite = _any_invite(stanza, user_x)
    if invite is None or jid_problem(invite.room, bare=True) is not None:
        return None  # no room that could be joined: nothing to accept (or to report)
    return invite


def _any_invite(stanza: Element, user_x: Element | None) -> Invite | None:
    if user_x is not None and (inv := user_x.find(f"{MUC_USER}invite")) is not None:
        return Invite(
            room=(stanza.get("from") or "").partition("/")[0],
            inviter=inv.get("from") or "",
            reason=_text(inv.find(f"{MUC_USER}reason")),
            password=_text(user_x.find(f"{MUC_USER}password")),
            via_room=True,
        )
    direct = stanza.find(CONFERENCE)
    if direct is not None and direct.get("jid"):
        return Invite(
            room=direct.get("jid") or "",
            inviter=stanza.get("from") or "",
            reason=direct.get("reason"),
            password=direct.get("password"),
        )
    return None


def read_presence(stanza: Element) -> PresenceIn:
    """The parts of a room's ``<presence/>`` the connector uses."""
    x = stanza.find(f"{MUC_USER}x")
    item = x.find(f"{MUC_USER}item") if x is not None else None
    codes = (
        frozenset(s.get("code") or "" for s in x.iter(f"{MUC_USER}status"))
        if x is not None
        else frozenset()
    )
    kind = stanza.get("type")
    reason = _text(item.find(f"{MUC_USER}reason")) if item is not None else None
    if reason is None and kind == "unavailable":
        reason = _text(stanza.find(f"{CLIENT}status"))  # a part's own words
    return PresenceIn(
        sender=stanza.get("from") or "",
        available=kind is None,
        codes=codes,
        real_jid=item.get("jid") if item is not None else None,
        new_nick=item.get("nick") if item is not None else None,
        reason=reason,
        error=_error(stanza) if kind == "error" else None,
    )
