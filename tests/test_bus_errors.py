"""nats-py's errors never escape the ipc layer: each is a BusError, so ``except EeveeError``
catches a closed connection, a full outgoing buffer or a subject the client refuses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from eeveepy.bus.natsserver import EmbeddedNats
from eeveepy.errors import (
    BadBusSubjectError,
    BusClosedError,
    EeveeError,
    OutboundBufferFullError,
    RequestTimeoutError,
)
from eeveepy.protocol.models import Ping, Pong

pytest.register_assert_rewrite("tests.ipc_fixtures")  # imported here, before pytest_plugins

from tests.ipc_fixtures import WAIT, Bus, chat, ready  # noqa: E402

pytest_plugins = ["tests.ipc_fixtures"]


async def test_a_closed_connection_is_a_bus_closed_error(bus: Bus) -> None:
    ipc = await bus.ipc("test.closed")
    await ipc.nc.close()
    attempts = {
        "publish": ipc.publish("chat.in.x", chat("late")),
        "publish_raw": ipc.publish_raw("chat.in.x", b"{}"),
        "request": ipc.request("operator.ping.x", Ping(), Pong, timeout=1),
        "publish_stored": ipc.publish_stored("chat.in.irc.x.y", chat("late"), deadline=1),
    }
    for what, attempt in attempts.items():
        with pytest.raises(BusClosedError) as info:
            await attempt
        assert isinstance(info.value, EeveeError), what
        assert info.value.subject.startswith(bus.prefix + "."), what
        assert "closed" in str(info.value), what


async def test_answering_on_a_closed_connection_is_a_bus_closed_error(bus: Bus) -> None:
    responder = await bus.ipc("test.responder")
    client = await bus.ipc("test.client")
    raised: asyncio.Queue[BaseException] = asyncio.Queue()

    async def on_ping(msg: Ping) -> None:
        await responder.nc.close()
        try:
            await responder.respond(Pong(operator="test.responder", state="running"))
        except EeveeError as exc:
            await raised.put(exc)

    await responder.subscribe("ping", on_ping)
    await ready(responder)
    with pytest.raises(RequestTimeoutError):
        await client.request("ping", Ping(), Pong, timeout=0.5)
    exc = await asyncio.wait_for(raised.get(), WAIT)
    assert isinstance(exc, BusClosedError)
    assert exc.subject.startswith("_INBOX.")


async def test_a_subject_the_client_refuses_is_a_bus_error(bus: Bus) -> None:
    ipc = await bus.ipc("test.subject")
    with pytest.raises(BadBusSubjectError) as info:
        await ipc.publish("chat.in.has space", chat("x"))
    assert info.value.subject == f"{bus.prefix}.chat.in.has space"
    with pytest.raises(BadBusSubjectError):
        await ipc.publish_raw("chat.in.line\r\nPUB evil 0", b"{}")
    await ipc.publish("chat.in.fine", chat("still connected"))
    assert ipc.nc.is_connected


async def test_a_full_outgoing_buffer_is_a_bus_error(tmp_path: Path) -> None:
    server = EmbeddedNats(store_dir=tmp_path, jetstream=False)
    await server.start()
    away = Bus(server.url)
    try:
        ipc = await away.ipc("test.away")
        await server.stop()
        for _ in range(200):  # the client notices the server is gone
            if not ipc.nc.is_connected:
                break
            await asyncio.sleep(0.05)
        assert not ipc.nc.is_connected
        big = chat("x" * 600_000)
        for _ in range(3):  # nats-py keeps up to 2 MiB to send once reconnected
            await ipc.publish("chat.in.x", big)
        with pytest.raises(OutboundBufferFullError) as info:
            await ipc.publish("chat.in.x", big)
        assert isinstance(info.value, EeveeError)
        assert info.value.subject == f"{away.prefix}.chat.in.x"
    finally:
        await away.close()
