"""XMPP as a platform of the connector kit: :class:`XmppPlatform`.

The kit (:mod:`eeveepy.connector`) reconnects, keeps the rooms wanted, pumps ``chat.out``
through flood control and serves ``chat.ctl`` concurrently; this module says what that means
on XMPP. The account's :class:`~operators.xmpp.client.XmppStream` outlives connections (a
dropped stream is resumed, XEP-0198), and so does the room state; a session is one
:class:`~operators.xmpp.session.XmppSession`. Rooms are multi-user chats compared as JIDs;
a rendered message is one ``groupchat`` or ``chat`` message per piece
(:func:`~operators.xmpp.translate.render`). Control requests (``room.join``, ``room.part``,
``room.users``, ``xmpp.nick``) are answered from the room's presences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Final

from slixmpp.types import MessageTypes as MessageType

from eeveepy import Operator
from eeveepy.connector import (
    ControlRequest,
    EgressLimits,
    Expect,
    Link,
    Outbound,
    Plan,
    Platform,
    ReconnectPolicy,
    Room,
    RoomAction,
    connector_operator,
    refused,
)
from eeveepy.connector.egress import Confirmation
from eeveepy.connector.platform import session_changes
from eeveepy.errors import EeveeError, SessionError
from eeveepy.protocol.models import ConnectorControlResult, OutgoingMessage
from operators.xmpp.client import XmppStream, route_library_logs
from operators.xmpp.muc import Change, ChangeKind, Muc
from operators.xmpp.resume import ResumeFile
from operators.xmpp.rooms import RoomControl
from operators.xmpp.session import XmppSession
from operators.xmpp.settings import SESSION_FIELDS, XmppSettings, network_name
from operators.xmpp.text import fold_jid, jid_problem, resource_problem, xml_safe
from operators.xmpp.translate import CHAT, PLATFORM, render

__all__ = ["XmppPlatform", "create", "main"]

NICK: Final = f"{PLATFORM}.nick"
MAX_QUEUED: Final = 5000


class XmppPlatform(Platform[XmppSettings]):
    """The XMPP account of one connector operator."""

    name: ClassVar[str] = PLATFORM
    session_fields: ClassVar[frozenset[str]] = SESSION_FIELDS
    actions: ClassVar[frozenset[str]] = frozenset(
        {RoomAction.JOIN, RoomAction.PART, RoomAction.USERS, NICK}
    )

    def __init__(self) -> None:
        self.stream: XmppStream | None = None
        self.muc = Muc()
        self.expect: Expect[Change] = Expect()
        self.rooms = RoomControl(self.muc, self._connected_stream, self._log)
        self.settings: XmppSettings | None = None
        self._session: XmppSession | None = None
        self.resume: ResumeFile | None = None
        self._logger: Any = None

    def _log(self) -> Any:
        return self._logger.warning if self._logger is not None else (lambda *a, **k: None)

    def _connected_stream(self) -> XmppStream | None:
        return self.stream if self._session is not None else None

    # -- what the settings mean --------------------------------------------------------------

    def plan(self, settings: XmppSettings, operator_id: str) -> Plan:
        s = self.settings = self.rooms.settings = settings
        return Plan(
            network=network_name(s, operator_id),
            rooms=[Room(r.jid, r.key) for r in s.rooms],
            egress=EgressLimits(s.egress_messages, s.egress_period, s.egress_burst, MAX_QUEUED),
            reconnect=ReconnectPolicy(s.reconnect_min, s.reconnect_max),
        )

    def fold(self, name: str) -> str:
        return fold_jid(name)

    def check(self, req: ControlRequest) -> str | None:
        if req.action == NICK:
            return resource_problem(req.name or "")
        if req.room is not None:
            return jid_problem(req.room, bare=True)
        return None

    # -- the session -------------------------------------------------------------------------

    async def session(self, settings: XmppSettings, link: Link) -> None:
        if self._logger is None:
            route_library_logs(link.log)
        self._logger = link.log
        self.settings = self.rooms.settings = settings
        stream = self.stream
        if stream is None or session_changes(stream.settings, settings, SESSION_FIELDS):
            old, stream = stream, XmppStream(settings)
            if old is not None:
                old.drop()
                handed = stream.adopt_pending(old)
                if handed:
                    link.log.info("unconfirmed messages go to the new stream", count=handed)
            self.stream = stream
            self._resume_left_behind(stream, link)
        stream.settings = settings
        session = XmppSession(stream, link, self.muc, self.expect, self.rooms, self.resume)
        self._session = session
        try:
            await session.run()
        finally:
            self._session = None

    def _resume_left_behind(self, stream: XmppStream, link: Link) -> None:
        """Ready the new stream to resume the session an earlier process of this connector
        left hibernating on the server, if it saved one (see :mod:`operators.xmpp.resume`)."""
        try:
            self.resume = ResumeFile(link.op.data_dir, on_written=stream.acknowledge_up_to)
        except EeveeError:  # run without a data directory: nothing to resume from
            self.resume = None
            return
        stream.acknowledge_up_to(0)  # nothing saved yet: nothing acknowledged yet
        found = self.resume.load(stream.settings.jid)
        if found is not None:
            saved, rooms = found
            stream.resume_from(saved.sm_id, saved.handled, saved.sent)
            self.muc.restore(rooms)
            link.log.info("resuming the stream left by the last run", rooms=len(rooms))

    async def join(self, rooms: Sequence[Room]) -> None:
        for room in rooms:
            state = self.muc.get(room.name)
            if state is None or not state.joined:
                self.rooms.join(room.name, room.key)

    def render(self, out: OutgoingMessage) -> list[Outbound]:
        s = self.settings
        assert s is not None  # plan() came first
        return render(out, max_bytes=s.max_message_bytes, styling=s.styling)

    async def send(self, item: Outbound) -> Confirmation | None:
        stream = self._connected_stream()
        if stream is None:
            raise SessionError("not connected")
        kind: MessageType = "chat" if item.kind == CHAT else "groupchat"
        return stream.send_chat(item.target, item.text, kind)

    async def goodbye(self) -> None:
        stream = self._connected_stream()
        if stream is not None:
            await stream.disconnect(wait=0.4, reason="shutting down")
        if self.resume is not None:
            self.resume.clear()  # the session ended: nothing to resume

    # -- control requests --------------------------------------------------------------------

    async def control(self, req: ControlRequest, link: Link) -> ConnectorControlResult:
        room = req.room or ""
        match req.room_action:
            case RoomAction.JOIN:
                return await self._join(req, room)
            case RoomAction.PART:
                return await self._part(req, room)
            case RoomAction.USERS:
                return self._users(req, room)
        return await self._nick(req, req.name or "")

    async def _join(self, req: ControlRequest, room: str) -> ConnectorControlResult:
        state = self.muc.get(room)
        if state is not None and state.joined:
            return req.ok(f"already in {room}")
        key = fold_jid(room)

        def joined(c: Change) -> Any:
            if fold_jid(c.room) != key:
                return None
            if c.kind is ChangeKind.JOINED:
                return True
            return c.text if c.kind is ChangeKind.REFUSED else None

        fut = self.expect.expect(joined)
        if not self.rooms.join(room, req.key):
            raise SessionError("disconnected")
        result = await fut
        if result is True:
            return req.ok(f"joined {room}")
        self.muc.forget(room)
        return refused(f"cannot join {room}: {result}")

    async def _part(self, req: ControlRequest, room: str) -> ConnectorControlResult:
        state = self.muc.get(room)
        if state is None or not state.joined:
            self.muc.forget(room)
            return req.ok(f"not in {room}")
        key = fold_jid(room)

        def left(c: Change) -> Any:
            own = c.kind in (ChangeKind.LEFT, ChangeKind.KICKED)
            return True if own and fold_jid(c.room) == key else None

        fut = self.expect.expect(left)
        self.rooms.part(room, req.reason)
        await fut
        self.muc.forget(room)
        return req.ok(f"left {room}")

    def _users(self, req: ControlRequest, room: str) -> ConnectorControlResult:
        state = self.muc.get(room)
        if state is None or not state.joined:
            return refused(f"names {room}: not in that room")
        users = sorted(state.occupants)
        return req.ok(f"{len(users)} users", users)

    async def _nick(self, req: ControlRequest, nick: str) -> ConnectorControlResult:
        rooms = [s for s in self.muc.joined() if s.nick != nick]
        if not rooms:
            return req.ok(f"now {nick} in every room")
        pending = {fold_jid(s.jid) for s in rooms}

        def renamed(c: Change) -> Any:
            if c.kind is ChangeKind.DENIED and fold_jid(c.room) in pending:
                return f"{c.room}: {c.text}"
            if c.kind is ChangeKind.NICK and c.text == nick:
                pending.discard(fold_jid(c.room))
            return True if not pending else None

        fut = self.expect.expect(renamed)
        for state in rooms:
            self.rooms.rename(state.jid, xml_safe(nick))
        result = await fut
        if result is not True:
            return refused(f"cannot take {nick}: {result}")
        return req.ok(f"now {nick} in {len(rooms)} rooms")


def create() -> Operator[XmppSettings]:
    """Build the XMPP operator (nothing runs until ``run()`` or ``serve()``)."""
    return connector_operator(XmppPlatform(), XmppSettings, name="xmpp")


def main() -> None:
    """Run the XMPP operator as a process."""
    create().run()
