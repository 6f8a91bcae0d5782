"""``subscribe(..., wants=...)``: a test of the raw payload that skips messages before they are
validated, against a real nats-server."""

from __future__ import annotations

import pytest

from eeveepy.errors import OperatorError
from eeveepy.protocol.models import ChatMessage

pytest.register_assert_rewrite("tests.ipc_fixtures")  # imported here, before pytest_plugins

from tests.ipc_fixtures import Bus, chat, count, ready, settle  # noqa: E402

pytest_plugins = ["tests.ipc_fixtures"]


async def test_wants_skips_before_validation_and_validates_what_it_lets_through(
    bus: Bus,
) -> None:
    sub_ipc = await bus.ipc("test.sub")
    pub = await bus.ipc("test.pub")
    got: list[str] = []
    tested: list[bytes] = []

    def wants(data: bytes) -> bool:
        tested.append(data)
        if b"boom" in data:
            raise ValueError("a test that fails lets the payload through")
        return b"++" in data

    async def on_chat(msg: ChatMessage) -> None:
        got.append(msg.text)

    sub = await sub_ipc.subscribe("chat.x", on_chat, wants=wants)
    await ready(sub_ipc)
    for text in ("plain", "bob++", "also plain", "boom", "c++ again"):
        await pub.publish("chat.x", chat(text))
    await pub.publish_raw(sub_ipc.full("chat.x"), b'{"not": "an envelope ++"}')
    await pub.publish_raw(sub_ipc.full("chat.x"), b"\xff\xfe garbage, no votes")
    await count(got, 3)
    await settle(pub, sub_ipc)
    assert got == ["bob++", "boom", "c++ again"]
    assert len(tested) == 7  # every payload was tested as it came
    assert (sub.stats.received, sub.stats.skipped, sub.stats.rejected) == (4, 3, 1)
    assert sub.stats.handled == 3


async def test_wants_is_refused_on_a_durable_subscription(bus: Bus) -> None:
    ipc = await bus.ipc("test.durable")

    async def on_chat(msg: ChatMessage) -> None:
        pass

    with pytest.raises(OperatorError, match="plain subscriptions only"):
        ipc.subscribe("chat.x", on_chat, durable="d", wants=lambda data: True)
