"""Matrix as a platform of the connector kit: :class:`MatrixPlatform`.

The kit (:mod:`eeveepy.connector`) reconnects with backoff, keeps the rooms wanted, pumps
``chat.out`` through flood control and serves ``chat.ctl`` concurrently; this module says what
that means on Matrix. A session is one :class:`~operators.matrix.session.MatrixSession` (a
matrix-nio client logged in and syncing); a rendered message is one ``m.room.message`` per
piece (:func:`~operators.matrix.translate.render`), sent under a transaction id kept across
retries; rooms are room ids or aliases, compared as they are written. Control requests:
``room.join``, ``room.part``, ``room.users`` and ``matrix.nick`` (the display name).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar, Final

from nio import (
    AsyncClient,
    JoinedMembersResponse,
    JoinResponse,
    RoomCreateResponse,
    RoomGetEventResponse,
    RoomResolveAliasResponse,
)
from nio.exceptions import LocalProtocolError, OlmTrustError, SendRetryError

from eeveepy import Operator
from eeveepy.connector import (
    ControlRequest,
    EgressLimits,
    Link,
    Outbound,
    Plan,
    Platform,
    ReconnectPolicy,
    Room,
    RoomAction,
    connector_operator,
)
from eeveepy.errors import MatrixSessionError, MatrixTargetError
from eeveepy.protocol.models import ConnectorControlResult, OutgoingMessage
from operators.matrix.client import call, make_client
from operators.matrix.session import MatrixSession, Threads
from operators.matrix.settings import ROOM_RE, SESSION_FIELDS, MatrixSettings, network_name
from operators.matrix.store import StateStore
from operators.matrix.translate import PLATFORM, MatrixOutbound, message_content, render, thread_of

__all__ = ["MatrixPlatform", "create", "main"]

NICK: Final = f"{PLATFORM}.nick"
"""The control action that sets the bot's display name (the wire's ``nick``)."""
MAX_QUEUED: Final = 5000
"""Messages kept while the homeserver is slow or away; beyond that the oldest are dropped."""
GIVE_UP: Final = frozenset({"M_FORBIDDEN", "M_NOT_FOUND", "M_TOO_LARGE", "M_BAD_JSON"})
"""Send errors that will not pass by retrying: the message is dropped (logged)."""
MAX_SEND_FAILURES: Final = 5
"""Failed sends of one message (server errors) after which it is dropped."""


class MatrixPlatform(Platform[MatrixSettings]):
    """The Matrix account of one connector operator."""

    name: ClassVar[str] = PLATFORM
    session_fields: ClassVar[frozenset[str]] = SESSION_FIELDS
    actions: ClassVar[frozenset[str]] = frozenset(
        {RoomAction.JOIN, RoomAction.PART, RoomAction.USERS, NICK}
    )

    def __init__(self) -> None:
        self.threads = Threads()
        self._client: AsyncClient | None = None
        self._settings: MatrixSettings | None = None
        self._link: Link | None = None
        self._aliases: dict[str, str] = {}
        self._direct: dict[str, str] = {}
        self._failures: dict[str, int] = {}

    # -- what the settings mean --------------------------------------------------------------

    def plan(self, settings: MatrixSettings, operator_id: str) -> Plan:
        s = settings
        return Plan(
            network=network_name(s, operator_id),
            rooms=[Room(r) for r in s.rooms],
            egress=EgressLimits(s.egress_messages, s.egress_period, s.egress_burst, MAX_QUEUED),
            reconnect=ReconnectPolicy(s.reconnect_min, s.reconnect_max),
        )

    def fold(self, name: str) -> str:
        return name  # room and user ids are compared as written

    def check(self, req: ControlRequest) -> str | None:
        if req.action == NICK:
            return None if (req.name or "").strip() else "a display name is needed"
        if req.room is not None and not ROOM_RE.match(req.room):
            return f"{req.room!r} is not a room id (!...) or alias (#name:server)"
        return None

    # -- the session -------------------------------------------------------------------------

    async def session(self, settings: MatrixSettings, link: Link) -> None:
        store = StateStore(link.op.data_dir, settings.homeserver, settings.user_id)
        client = make_client(settings, store)
        self._settings, self._link = settings, link
        try:
            session = MatrixSession(client, settings, store, link, self.threads)
            self._client = client
            await session.run()
        finally:
            self._client = None
            self._aliases.clear()
            self._direct.clear()
            await client.close()

    def _current(self) -> AsyncClient:
        if self._client is None or self._link is None or not self._link.connected:
            raise MatrixSessionError("not connected")
        return self._client

    @property
    def _log(self) -> Any:
        assert self._link is not None
        return self._link.log

    async def join(self, rooms: Sequence[Room]) -> None:
        client = self._client
        if client is None:
            return  # the session ended meanwhile: the next one joins them all
        for name in [r.name for r in rooms if r.name not in client.rooms]:
            try:
                await call(partial(client.join, name), "join", self._log)
            except MatrixSessionError as exc:
                self._log.warning("cannot join", room=name, error=str(exc))

    async def goodbye(self) -> None:
        return None  # a Matrix session has nothing to close politely: the token stays valid

    # -- sending -----------------------------------------------------------------------------

    def render(self, out: OutgoingMessage) -> list[Outbound]:
        return list(render(out))

    async def send(self, item: Outbound) -> None:
        client = self._current()
        txn = item.txn_id if isinstance(item, MatrixOutbound) and item.txn_id else None
        key = txn or str(id(item))
        try:
            await self._send(client, item, txn)
        except MatrixSessionError as exc:
            self._failures[key] = failures = self._failures.get(key, 0) + 1
            if exc.status in GIVE_UP or failures >= MAX_SEND_FAILURES:
                self._failures.pop(key, None)
                raise MatrixTargetError(f"{item.target}: {exc}") from None
            raise
        except (LocalProtocolError, OlmTrustError, SendRetryError) as exc:
            raise MatrixTargetError(f"{item.target}: cannot send there: {exc}") from None
        self._failures.pop(key, None)

    async def _send(self, client: AsyncClient, item: Outbound, txn: str | None) -> None:
        room_id = await self._room_for(client, item)
        thread = await self._thread(client, room_id, item.reply_to)
        content = message_content(item, thread)
        settings = self._link.op.settings if self._link is not None else self._settings
        assert isinstance(settings, MatrixSettings)

        def send() -> Any:
            return client.room_send(
                room_id, "m.room.message", content, tx_id=txn, ignore_unverified_devices=True
            )

        await call(send, "send", self._log, max_wait=settings.max_retry_after)

    async def _room_for(self, client: AsyncClient, item: Outbound) -> str:
        """The room id to send ``item`` to: the target, its alias resolved, or the direct
        room with the user of a private message (created on first use)."""
        target = item.target
        if item.private:
            return self._direct.get(target) or await self._direct_room(client, target)
        if not target.startswith("#"):
            return target
        if target not in self._aliases:
            resp = await call(lambda: client.room_resolve_alias(target), "alias", self._log)
            assert isinstance(resp, RoomResolveAliasResponse)
            self._aliases[target] = str(resp.room_id)
        return self._aliases[target]

    async def _direct_room(self, client: AsyncClient, user: str) -> str:
        for room_id, room in client.rooms.items():
            if room.member_count == 2 and user in room.users:
                self._direct[user] = str(room_id)
                return str(room_id)
        resp = await call(
            lambda: client.room_create(is_direct=True, invite=[user]), "create room", self._log
        )
        assert isinstance(resp, RoomCreateResponse)
        self._direct[user] = str(resp.room_id)
        return str(resp.room_id)

    async def _thread(self, client: AsyncClient, room_id: str, event_id: str | None) -> str | None:
        """The thread of the answered event (asked of the homeserver when not remembered)."""
        if event_id is None:
            return None
        if event_id not in self.threads:
            try:
                get = await call(
                    lambda: client.room_get_event(room_id, event_id), "event", self._log
                )
            except MatrixSessionError:
                return None  # not visible to the bot: answer outside any thread
            assert isinstance(get, RoomGetEventResponse)
            self.threads.note(event_id, thread_of(get.event.source.get("content") or {}))
        return self.threads[event_id]

    # -- control requests --------------------------------------------------------------------

    async def control(self, req: ControlRequest, link: Link) -> ConnectorControlResult:
        client = self._current()
        room = req.room or ""
        try:
            match req.room_action:
                case RoomAction.JOIN:
                    joined = await call(lambda: client.join(room), "join", link.log)
                    assert isinstance(joined, JoinResponse)
                    alias = f" ({joined.room_id})" if room.startswith("#") else ""
                    return req.ok(f"joined {room}{alias}")
                case RoomAction.PART:
                    room_id = await self._room_for(client, Outbound(room, ""))
                    await call(lambda: client.room_leave(room_id), "leave", link.log)
                    return req.ok(f"left {room}")
                case RoomAction.USERS:
                    room_id = await self._room_for(client, Outbound(room, ""))
                    got = await call(lambda: client.joined_members(room_id), "members", link.log)
                    assert isinstance(got, JoinedMembersResponse)
                    return req.ok(f"{len(got.members)} users", [m.user_id for m in got.members])
            name = req.name or ""
            await call(lambda: client.set_displayname(name), "display name", link.log)
            return req.ok(f"now {name}")
        except MatrixSessionError as exc:
            return req.refuse(str(exc))


def create() -> Operator[MatrixSettings]:
    """Build the Matrix operator (nothing runs until ``run()`` or ``serve()``)."""
    return connector_operator(MatrixPlatform(), MatrixSettings, name="matrix")


def main() -> None:
    """Run the Matrix operator as a process."""
    create().run()
