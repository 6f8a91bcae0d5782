"""Joining, leaving and renaming in rooms: :class:`RoomControl`.

Every join goes through :meth:`RoomControl.join`: the room state is noted in the
:class:`~operators.xmpp.muc.Muc` and a presence is sent to ``room/nick`` asking for no history
(history is never a command anyway, see :mod:`operators.xmpp.translate`). When the room
answers that the nick is taken, the next of the nick, ``alt_nicks`` and the nick followed by
``_`` is tried (:meth:`RoomControl.refused`); other refusals (password, ban, no such room)
are logged. Invitations are joined when the inviter is allowed (:meth:`RoomControl.invited`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final
from xml.etree.ElementTree import Element, SubElement

from operators.xmpp.client import XmppStream
from operators.xmpp.muc import Change, Muc
from operators.xmpp.settings import XmppSettings
from operators.xmpp.stanzas import Invite
from operators.xmpp.text import fold_jid, jid_problem, xml_safe

__all__ = ["RoomControl"]

MUC: Final = "{http://jabber.org/protocol/muc}"
MAX_NICK_TRIES: Final = 6


class RoomControl:
    """Sends the presences that join, leave and rename the bot in rooms."""

    def __init__(
        self, muc: Muc, stream: Callable[[], XmppStream | None], log: Callable[[], Any]
    ) -> None:
        self.muc = muc
        self._stream = stream
        self._log = log
        self.settings: XmppSettings | None = None

    def _nicks(self, room: str) -> list[str]:
        s = self.settings
        assert s is not None
        state = self.muc.get(room)
        configured = next((r.nick for r in s.rooms if fold_jid(r.jid) == fold_jid(room)), None)
        first = state.nick if state is not None else configured or s.nick
        nicks = [first, configured or s.nick, *s.alt_nicks, s.nick + "_", s.nick + "__"]
        return list(dict.fromkeys(n for n in nicks if n))

    def join(self, room: str, password: str | None = None, nick: str | None = None) -> bool:
        """Send a join of ``room`` (as ``nick``, else the room's or the account's nick);
        False when not connected."""
        stream = self._stream()
        if stream is None:
            return False
        state = self.muc.get(room)
        nick = nick or (state.nick if state is not None else None) or self._nicks(room)[0]
        if password is None and state is not None:
            password = state.password
        self.muc.joining(room, nick, password)
        pres = stream.make_presence(pto=f"{room}/{nick}")
        x = Element(f"{MUC}x")
        SubElement(x, f"{MUC}history", maxstanzas="0")
        if password:
            SubElement(x, f"{MUC}password").text = xml_safe(password)
        pres.append(x)
        pres.send()
        return True

    def part(self, room: str, reason: str | None = None) -> bool:
        stream = self._stream()
        state = self.muc.get(room)
        if stream is None or state is None:
            return False
        stream.send_presence(
            pto=f"{state.jid}/{state.nick}",
            ptype="unavailable",
            pstatus=xml_safe(reason) if reason else None,
        )
        return True

    def rename(self, room: str, nick: str) -> bool:
        stream = self._stream()
        state = self.muc.get(room)
        if stream is None or state is None or not state.joined:
            return False
        stream.send_presence(pto=f"{state.jid}/{nick}")
        return True

    def refused(self, change: Change) -> str | None:
        """A join was refused: try the next nick when ours is taken. What the refusal means
        for whoever waits on the join: None while another nick is being tried."""
        state = self.muc.get(change.room)
        error = change.text or "refused"
        if state is not None and error.startswith("conflict"):
            for nick in self._nicks(change.room):
                if nick not in state.tried and len(state.tried) < MAX_NICK_TRIES:
                    self._log()("nick taken in room: trying another", room=state.jid, nick=nick)
                    self.join(state.jid, state.password, nick)
                    return None
        self._log()("cannot join room", room=change.room, error=error)
        return error

    def invited(self, invite: Invite) -> bool:
        """Join the room of ``invite`` if it comes from an allowed inviter; True when joining.

        A direct invitation (XEP-0249) comes from the inviter, as the servers vouch. One sent
        through a room names an inviter only the room claims: any room on any server could
        name an allowed one. It is taken when the room's service is the inviter's domain or
        below it (``conference.example.org`` for ``alice@example.org``), or is itself allowed.
        """
        s = self.settings
        if jid_problem(invite.room, bare=True) is not None:
            return False
        allowed = {fold_jid(a) for a in (s.invite_from if s is not None else [])}
        inviter = fold_jid(invite.inviter.partition("/")[0])
        domain = inviter.partition("@")[2]
        if not allowed & {inviter, domain}:
            return False
        if invite.via_room:
            service = fold_jid(invite.room).partition("@")[2]
            vouched = service == domain or service.endswith("." + domain)
            if not (vouched or allowed & {service, fold_jid(invite.room)}):
                return False
        return self.join(invite.room, invite.password)
