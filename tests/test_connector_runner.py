"""The connector kit's runner against the real nats-server, with an in-memory platform.

Each test runs a connector operator in-process (``Operator.serve()``) whose platform is
:class:`~tests.connector_fake.FakePlatform`, under a subject prefix of its own, and drives its
fake server: refused sessions and credentials, closed connections, slow answers, reloads.
Reconnect jitter is fixed (the full step), so delays are checked against exact steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from eeveepy.bus.names import outbox_consumer_name as consumer_name
from eeveepy.bus.streams import chat_in_stream_name, chat_out_stream_name, ensure_chat_streams
from eeveepy.connector import Connector, Room, connector_operator
from eeveepy.errors import NoRespondersError
from eeveepy.protocol.models import (
    ChatEvent,
    ChatMessage,
    ConnectorControl,
    ConnectorControlResult,
    Control,
    ControlAction,
    ControlResult,
    DeadLetter,
    OutgoingMessage,
    Ready,
)
from eeveepy.runtime.operator import Operator
from tests.connector_fake import (
    WAIT,
    Bus,
    FakePlatform,
    FakeServer,
    FakeSettings,
    chat,
    get,
    until,
)

SLACK = 0.25
"""How much later than planned a reconnect may come on a loaded machine."""
OP_ID = "fake.test"


@pytest_asyncio.fixture
async def bus(nats_url: str, tmp_path: Path) -> AsyncIterator[Bus]:
    b = Bus(nats_url, tmp_path)
    await b.start()
    try:
        yield b
    finally:
        await b.close()


@contextlib.asynccontextmanager
async def running(
    bus: Bus, server: FakeServer, settings: dict[str, Any] | None = None
) -> AsyncIterator[tuple[Operator[FakeSettings], Connector[FakeSettings]]]:
    """The fake connector serving, Ready; stopped (and its exit code checked) at the end."""
    op = connector_operator(FakePlatform(server), FakeSettings, name="fake", jitter=lambda: 1.0)
    connector = op.extensions[Connector]
    assert isinstance(connector, Connector)
    ready = await bus.collect(bus.subjects.operator_ready(OP_ID), Ready)
    task = asyncio.create_task(op.serve(bus.env(OP_ID, settings or {})))
    try:
        await get(ready)
        yield op, connector
        op.request_stop()
        assert await asyncio.wait_for(task, WAIT) == 0
    finally:
        task.cancel()


async def control(bus: Bus, network: str = "test", wait: float = WAIT, **req: Any) -> Any:
    """A ``chat.ctl`` request to the fake connector; its answer's body."""
    subject = bus.subjects.chat_ctl("fake", network)
    reply = await bus.io.request(
        subject, ConnectorControl(**req), ConnectorControlResult, timeout=wait
    )
    return reply.body


async def reload(bus: Bus, settings: dict[str, Any]) -> None:
    bus.settings_file(OP_ID).write_text(json.dumps(settings))
    subject = bus.subjects.operator_ctl(OP_ID)
    reply = await bus.io.request(
        subject, Control(action=ControlAction.RELOAD), ControlResult, timeout=WAIT
    )
    assert reply.body.ok, reply.body


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def drain(queue: asyncio.Queue[Any]) -> list[Any]:
    await asyncio.sleep(0.2)
    items = []
    while not queue.empty():
        items.append(queue.get_nowait().body)
    return items


# -- delivery ------------------------------------------------------------------------------


async def test_messages_are_stored_once_and_chat_out_is_sent_once_and_acknowledged(
    bus: Bus,
) -> None:
    js = bus.io.nc.jetstream()
    await ensure_chat_streams(js, bus.prefix)
    server = FakeServer()
    chat_in = await bus.collect("chat.in.fake.test.>", ChatMessage)
    out = bus.subjects.chat_out("fake", "test")
    dead = await bus.collect(bus.subjects.dlq(out), DeadLetter)
    async with running(bus, server):
        await until(server.connected.is_set, what="a session")
        server.inbound.put_nowait(chat("my own line, echoed", user="BOT"))  # dropped
        server.inbound.put_nowait(chat("ping?"))
        env = await get(chat_in)
        assert (env.body.text, env.source) == ("ping?", OP_ID)
        info = await js.stream_info(chat_in_stream_name(bus.prefix))
        assert info.state.messages == 1, "stored once; the bot's echo never"
        await until(lambda: len(server.sent) == 1, what="the platform's own answer")
        assert (server.sent[0].target, server.sent[0].text) == ("alice", "pong!")
        server.sent.clear()

        # Fast path and stream both bring it: the platform sends it once, then it is acked.
        msg = OutgoingMessage(platform="fake", network="test", target="#room", text="one\ntwo")
        await bus.io.publish_stored(out, msg)
        await until(lambda: len(server.sent) >= 2, what="two sends")
        consumer = consumer_name(OP_ID)

        async def settled() -> bool:
            c = await js.consumer_info(chat_out_stream_name(bus.prefix), consumer)
            return c.num_ack_pending == 0 and c.num_pending == 0

        deadline = time.monotonic() + WAIT
        while not await settled():
            assert time.monotonic() < deadline, "the stream's copy was never acknowledged"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        assert [(i.target, i.text) for i in server.sent] == [("#room", "one"), ("#room", "two")]

        refused = msg.model_copy(update={"target": "!everyone"})
        await bus.io.publish(out, refused)
        letter = (await get(dead)).body
        assert letter.reason == "invalid fake target: '!everyone'"
        assert (letter.receiver, letter.subject) == (OP_ID, out)


# -- reconnecting --------------------------------------------------------------------------


async def test_reconnect_storm_backs_off_resets_and_slows_after_refused_credentials(
    bus: Bus,
) -> None:
    server = FakeServer(refuse=4)
    events = await bus.collect("chat.event.fake.test.*", ChatEvent)
    async with running(bus, server, {"reconnect_min": 0.05, "reconnect_max": 1.0}):
        await until(server.connected.is_set, what="the fifth session")
        assert len(server.sessions) == 5
        for gap, step in zip(gaps(server.sessions), [0.05, 0.1, 0.2, 0.4], strict=True):
            assert step <= gap < step + SLACK, gaps(server.sessions)
        first = (await get(events)).body
        assert (first.event, first.user.id, first.text) == ("connected", "Bot", "fake.example")
        assert await drain(events) == [], "refused sessions were never connected: no events"

        # A healthy session (10 x reconnect_min): the next delay is the shortest again.
        await asyncio.sleep(0.6)
        closed = time.monotonic()
        server.inbound.put_nowait(None)
        await until(lambda: len(server.sessions) == 6, what="a sixth session")
        assert 0.05 <= server.sessions[5] - closed < 0.05 + SLACK
        await until(server.connected.is_set, what="connected again")

        # Refused credentials: retried from 8 x reconnect_min, and told on each attempt.
        server.auth_fail = True
        server.inbound.put_nowait(None)
        await until(lambda: len(server.sessions) == 9, wait=4, what="three refused logins")
        auth = gaps(server.sessions)[-2:]
        assert 0.4 <= auth[0] < 0.4 + SLACK, auth
        assert 0.8 <= auth[1] < 0.8 + SLACK, auth
        told = [(e.event, e.text) for e in await drain(events)]
        refused = ("disconnected", "authentication failed: bad password")
        assert told == [
            ("disconnected", "connection closed"),
            ("connected", "fake.example"),
            ("disconnected", "connection closed"),
            refused,
            refused,
            refused,
        ], told


# -- control -------------------------------------------------------------------------------


async def test_control_requests_are_served_concurrently_and_rooms_rejoined(bus: Bus) -> None:
    server = FakeServer(answer_delay={"#slow": 2.0})
    async with running(bus, server, {"rooms": ["#home"]}) as (_, connector):
        await until(lambda: server.joins == [["#home"]], what="the rooms joined")
        slow = asyncio.create_task(control(bus, action="join", room="#slow"))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        names = await control(bus, wait=1.0, action="names", room="#home")
        assert names.ok
        assert names.users == ["alice", "bob"]
        assert time.monotonic() - started < 1.0, "not behind the join"
        assert not slow.done()
        for request, message in [
            ({"action": "join"}, "join: a room is needed"),
            ({"action": "part", "room": "lobby"}, "part: 'lobby' is not a room"),
            ({"action": "nick", "nick": "no way"}, "nick: a nick is letters and digits"),
        ]:
            result = await control(bus, **request)
            assert (result.ok, result.message) == (False, message)
        assert (await control(bus, action="nick", nick="Eve")).message == "now Eve"
        joined = await asyncio.wait_for(slow, WAIT)
        assert (joined.ok, joined.message) == (True, "joined #slow")

        server.inbound.put_nowait(None)  # the server closes: both rooms are joined again
        await until(lambda: len(server.joins) == 2, what="a rejoin")
        assert server.joins[1] == ["#home", "#slow"]
        assert (await control(bus, action="part", room="#HOME")).ok
        server.inbound.put_nowait(None)
        await until(lambda: len(server.joins) == 3, what="a second rejoin")
        assert server.joins[2] == ["#slow"]

        server.refuse = 1000
        server.inbound.put_nowait(None)
        await until(lambda: not connector.link.connected, what="disconnected")
        result = await control(bus, action="join", room="#x")
        assert (result.ok, result.message) == (False, "not connected to test")


# -- reload and stop -----------------------------------------------------------------------


async def test_reload_applies_live_or_with_a_new_session(bus: Bus) -> None:
    server = FakeServer()
    events = await bus.collect("chat.event.fake.>", ChatEvent)
    settings: dict[str, Any] = {"rooms": ["#a"]}
    async with running(bus, server, settings) as (_, connector):
        assert (await get(events)).body.event == "connected"
        await until(lambda: server.joins == [["#a"]], what="the first join")

        await reload(bus, {"rooms": ["#a", "#b"], "egress_lines": 5})  # live
        await until(lambda: server.joins[-1] == ["#b"], what="#b joined")
        await reload(bus, {"rooms": ["#b"], "egress_lines": 5})
        assert list(connector.link.rooms) == [Room("#b")]
        assert connector.egress.limits.rate == 5
        assert len(server.sessions) == 1
        assert await drain(events) == []

        await reload(bus, {"rooms": ["#b"], "nick": "Other"})  # a session setting
        await until(lambda: len(server.sessions) == 2, what="a new session")
        down, up = (await get(events)).body, (await get(events)).body
        assert (down.event, down.text) == ("disconnected", "reconnecting with new settings")
        assert (up.event, up.user.id) == ("connected", "Other")

        await reload(bus, {"rooms": ["#b"], "nick": "Other", "network": "elsewhere"})
        down, up = (await get(events)).body, (await get(events)).body
        assert (down.event, down.network, up.event, up.network) == (
            "disconnected",
            "test",
            "connected",
            "elsewhere",
        )
        assert (await control(bus, network="elsewhere", action="names", room="#b")).ok
        with pytest.raises(NoRespondersError):
            await control(bus, action="names", room="#b")


async def test_goodbye_is_said_and_bounded(bus: Bus) -> None:
    server = FakeServer(goodbye_delay=30.0)
    async with running(bus, server):
        await until(server.connected.is_set, what="a session")
        started = time.monotonic()
    assert time.monotonic() - started < 1.3, "the goodbye is cut at 0.5 s"
    assert server.goodbyes == 1
