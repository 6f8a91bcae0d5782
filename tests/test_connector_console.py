"""The console connector, the kit's second user, in-process against the real nats-server.

(``tests/test_chat.py`` runs it as a process under ``eevee up`` with ``eevee chat``.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from eeveepy.connector import ConnectionState, Connector
from eeveepy.protocol.models import (
    ChatEvent,
    ChatEventType,
    ChatUser,
    ConnectorControl,
    ConnectorControlResult,
    DeadLetter,
    Ready,
)
from operators.console import create
from tests.connector_fake import WAIT, Bus, get


@pytest_asyncio.fixture
async def bus(nats_url: str, tmp_path: Path) -> AsyncIterator[Bus]:
    b = Bus(nats_url, tmp_path)
    await b.start()
    try:
        yield b
    finally:
        await b.close()


async def test_console_is_a_connector_of_the_kit(bus: Bus) -> None:
    op = create()
    connector = op.extensions[Connector]
    assert isinstance(connector, Connector)
    connected = await bus.collect("chat.event.console.kit.connected", ChatEvent)
    ready = await bus.collect(bus.subjects.operator_ready("console"), Ready)
    task = asyncio.create_task(op.serve(bus.env("console", {"network": "kit"})))
    try:
        await get(ready)
        event = (await get(connected)).body
        assert (event.user.id, event.text) == ("eevee", None)
        assert connector.link.connection is ConnectionState.CONNECTED
        ctl = bus.subjects.chat_ctl("console", "kit")

        async def request(**req: str) -> ConnectorControlResult:
            reply = await bus.io.request(
                ctl, ConnectorControl(**req), ConnectorControlResult, timeout=WAIT
            )
            return reply.body

        # Sessions announce themselves; the console lists who it saw joining a room.
        for name, kind in [("dana", "join"), ("erin", "join"), ("erin", "part")]:
            body = ChatEvent(
                platform="console",
                network="kit",
                event=ChatEventType(kind),
                room="#console",
                user=ChatUser(id=f"{name}-1", name=name),
            )
            await bus.io.publish(bus.subjects.chat_event("console", "kit", kind), body)

        async def names() -> list[str]:
            return (await request(action="names", room="#console")).users

        for _ in range(100):
            if await names() == ["dana"]:
                break
            await asyncio.sleep(0.02)
        assert await names() == ["dana"]
        refused = await request(action="join", room="#elsewhere")
        assert (refused.ok, refused.message) == (
            False,
            "join: not supported by the console connector",
        )
        nick = await request(action="nick", nick="bot")
        assert nick.message == "nick: not supported by the console connector"

        # A malformed chat.out is dead-lettered, as by any connector.
        out = bus.subjects.chat_out("console", "kit")
        dead = await bus.collect(bus.subjects.dlq(out), DeadLetter)
        await bus.io.publish_raw(out, b'{"not": "an envelope"}')
        letter = (await get(dead)).body
        assert (letter.receiver, letter.subject) == ("console", out)
    finally:
        op.request_stop()
        assert await asyncio.wait_for(task, WAIT) == 0
