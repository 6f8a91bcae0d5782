"""An in-memory chat platform for the connector kit's tests, and a bus to watch it from.

:class:`FakePlatform` subclasses the kit's real :class:`~eeveepy.connector.Platform`; it talks
to a :class:`FakeServer` in memory (no socket) that the test drives: refuse sessions, refuse
credentials, deliver messages, close the connection, fail sends, answer joins late.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from eeveepy.connector import (
    ConnectionState,
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
)
from eeveepy.errors import AuthenticationError, RefusedError, SessionError
from eeveepy.protocol.models import (
    ChatMessage,
    ChatUser,
    ConnectorControlResult,
    Envelope,
    OutgoingMessage,
)
from tests.bus_fixtures import PrefixedBus
from tests.operator_procs import contract_env

WAIT = 5.0


class FakeSettings(BaseModel):
    """Settings of the fake connector: ``server`` and ``nick`` need a new session."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    server: str = "fake.example"
    nick: str = "Bot"
    network: str = "test"
    rooms: list[str] = []
    egress_lines: int = 0
    egress_period: float = 1.0
    egress_burst: int = 1
    queue_cap: int = 5000
    reconnect_min: float = 0.05
    reconnect_max: float = 1.0


@dataclass
class FakeServer:
    """The chat server the fake platform talks to; the test drives it."""

    refuse: int = 0
    """The next sessions that fail to connect."""
    auth_fail: bool = False
    fail_sends: int = 0
    """The next sends that fail (and are tried again)."""
    answer_delay: dict[str, float] = field(default_factory=dict)
    """Seconds before the server answers a join of that room (default: at once)."""
    goodbye_delay: float = 0.0
    sessions: list[float] = field(default_factory=list)
    """When each session started (time.monotonic())."""
    sent: list[Outbound] = field(default_factory=list)
    joins: list[list[str]] = field(default_factory=list)
    goodbyes: int = 0
    inbound: asyncio.Queue[ChatMessage | None] = field(default_factory=asyncio.Queue)
    """Messages for the platform to read; None closes the connection."""
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    wrote: asyncio.Event = field(default_factory=asyncio.Event)


class FakePlatform(Platform[FakeSettings]):
    """A platform of the kit whose sessions talk to a :class:`FakeServer`."""

    name: ClassVar[str] = "fake"
    session_fields: ClassVar[frozenset[str]] = frozenset({"server", "nick"})
    actions: ClassVar[frozenset[str]] = frozenset(
        {RoomAction.JOIN, RoomAction.PART, RoomAction.USERS, "fake.nick"}
    )

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.expect: Expect[tuple[str, str]] = Expect()

    def plan(self, settings: FakeSettings, operator_id: str) -> Plan:
        s = settings
        return Plan(
            network=s.network,
            rooms=[Room(r) for r in s.rooms],
            egress=EgressLimits(s.egress_lines, s.egress_period, s.egress_burst, s.queue_cap),
            reconnect=ReconnectPolicy(s.reconnect_min, s.reconnect_max),
        )

    def fold(self, name: str) -> str:
        return name.lower()

    def check(self, req: ControlRequest) -> str | None:
        if req.room is not None and not req.room.startswith("#"):
            return f"{req.room!r} is not a room"
        if req.action == "fake.nick" and not (req.name or "").isalnum():
            return "a nick is letters and digits"
        return None

    async def session(self, settings: FakeSettings, link: Link) -> None:
        server = self.server
        server.sessions.append(time.monotonic())
        if server.refuse > 0:
            server.refuse -= 1
            raise SessionError("connection refused")
        if server.auth_fail:
            raise AuthenticationError("authentication failed: bad password")
        link.me = ChatUser(id=settings.nick, name=settings.nick)
        link.state(ConnectionState.CONNECTED, settings.server)
        server.connected.set()
        try:
            while (msg := await server.inbound.get()) is not None:
                if msg.text == "ping?":  # answered by the platform itself, behind flood control
                    link.put(Outbound(msg.user.id, "pong!", private=True))
                await link.message(msg)
        finally:
            server.connected.clear()
            self.expect.fail(SessionError("disconnected"))

    async def join(self, rooms: Sequence[Room]) -> None:
        self.server.joins.append([r.name for r in rooms])

    def render(self, out: OutgoingMessage) -> list[Outbound]:
        if out.target.startswith("!"):
            raise RefusedError(f"invalid fake target: {out.target!r}")
        return [Outbound(out.target, line) for line in out.text.split("\n") if line]

    async def send(self, item: Outbound) -> None:
        if self.server.fail_sends > 0:
            self.server.fail_sends -= 1
            raise SessionError("write failed")
        self.server.sent.append(item)
        self.server.wrote.set()

    async def control(self, req: ControlRequest, link: Link) -> ConnectorControlResult:
        room = req.room or ""
        if req.action == RoomAction.JOIN:
            answered = self.expect.expect(lambda ev: True if ev == ("joined", room) else None)
            delay = self.server.answer_delay.get(room, 0.0)
            asyncio.get_running_loop().call_later(delay, self.expect.feed, ("joined", room))
            await answered
            return req.ok(f"joined {room}")
        if req.action == RoomAction.PART:
            return req.ok(f"left {room}")
        if req.action == RoomAction.USERS:
            return req.ok("2 users", users=["alice", "bob"])
        return req.ok(f"now {req.name}")

    async def goodbye(self) -> None:
        self.server.goodbyes += 1
        await asyncio.sleep(self.server.goodbye_delay)


def chat(text: str, *, user: str = "alice", room: str = "#room") -> ChatMessage:
    """A message as the fake server delivers it."""
    return ChatMessage(
        platform="fake", network="test", room=room, user=ChatUser(id=user, name=user), text=text
    )


class Bus(PrefixedBus):
    """The test's own connection, under a subject prefix of its own."""

    SOURCE = "test.connector"

    def env(self, op_id: str, settings: dict[str, Any]) -> dict[str, str]:
        """The process contract for ``op_id``, its settings in a file a test may rewrite."""
        path = self.settings_file(op_id)
        path.write_text(json.dumps(settings))
        return contract_env(
            url=self.url,
            prefix=self.prefix,
            op_id=op_id,
            tmp=self.tmp,
            EEVEE_SETTINGS_FILE=str(path),
        )

    def settings_file(self, op_id: str) -> Path:
        return self.tmp / f"{op_id}.json"


async def get(queue: asyncio.Queue[Envelope[Any]], wait: float = WAIT) -> Envelope[Any]:
    return await asyncio.wait_for(queue.get(), wait)


async def until(predicate: Any, wait: float = WAIT, what: str = "") -> None:
    """Wait (bounded) until ``predicate()`` is true."""
    deadline = time.monotonic() + wait
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.01)
