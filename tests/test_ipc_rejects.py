"""Bad input (dead letters) and payload limits of the ipc layer against a real nats-server."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from eeveepy.bus.natsserver import EmbeddedNats
from eeveepy.errors import (
    PayloadTooLargeError,
)
from eeveepy.protocol.codec import EnvelopeEncoder
from eeveepy.protocol.models import (
    ChatMessage,
    DeadLetter,
    Envelope,
    Ping,
    Pong,
)

pytest.register_assert_rewrite("tests.ipc_fixtures")  # imported here, before pytest_plugins

from tests.ipc_fixtures import (  # noqa: E402
    WAIT,
    Bus,
    RecordingLogger,
    chat,
    count,
    ready,
    settle,
    until,
)

pytest_plugins = ["tests.ipc_fixtures"]


# -- bad input -----------------------------------------------------------------------------

_ENCODER = EnvelopeEncoder("test.rogue")


def _unknown_kind() -> bytes:
    _, payload = _ENCODER.encode(chat("fits the model"))
    return payload.replace(b'"kind":"chat.message"', b'"kind":"made.up"', 1)


BAD_INPUTS = [
    pytest.param(b"\xff\xfe not json", "Invalid JSON", "base64", False, id="malformed-bytes"),
    pytest.param(b'{"hello": "world"}', "kind: Field required", "utf-8", False, id="wrong-shape"),
    pytest.param(_unknown_kind(), "unexpected kind 'made.up'", "utf-8", False, id="unknown-kind"),
    pytest.param(
        _ENCODER.encode(Ping())[1], "unexpected kind 'ping'", "utf-8", False, id="other-kind"
    ),
    pytest.param(b"x" * 100_000, "over the limit of 4096", "utf-8", True, id="oversize"),
]


@pytest.mark.parametrize(("payload", "reason", "encoding", "truncated"), BAD_INPUTS)
async def test_bad_input_goes_to_the_dlq(
    bus: Bus, payload: bytes, reason: str, encoding: str, truncated: bool
) -> None:
    log = RecordingLogger()
    receiver = await bus.ipc("test.receiver", max_inbound=4096, logger=log)
    dlq = await bus.ipc("test.dlq")
    pub = await bus.ipc("test.pub")
    handled: list[str] = []
    letters: list[Envelope[DeadLetter]] = []

    def on_chat(msg: ChatMessage) -> None:
        handled.append(msg.text)

    def on_dead(env: Envelope[DeadLetter]) -> None:
        letters.append(env)

    sub = await receiver.subscribe("in.x", on_chat)
    await dlq.subscribe("dlq.>", on_dead)
    await ready(receiver, dlq)

    subject = f"{bus.prefix}.in.x"
    await pub.nc.publish(subject, payload)
    await pub.publish("in.x", chat("still alive"))
    await count(handled, 1)
    await count(letters, 1)
    await settle(pub, receiver, dlq)

    assert handled == ["still alive"]
    assert len(letters) == 1
    env = letters[0]
    assert env.source == "test.receiver"
    letter = env.body
    assert letter.subject == subject
    assert reason in letter.reason
    assert letter.receiver == "test.receiver"
    assert letter.size == len(payload)
    assert letter.encoding == encoding
    assert letter.truncated is truncated
    raw = base64.b64decode(letter.payload) if encoding == "base64" else letter.payload.encode()
    assert raw == payload[:4096]

    stats = sub.stats
    assert (stats.received, stats.rejected, stats.handled, stats.failed) == (2, 1, 1, 0)
    assert receiver.rejected == 1
    assert log.problems() == ["envelope rejected"]
    ((level, fields),) = log.named("envelope rejected")
    assert level == "warning"
    assert fields["subject"] == subject
    assert reason in fields["reason"]


async def test_dlq_can_be_disabled(bus: Bus) -> None:
    receiver = await bus.ipc("test.receiver", dlq=False)
    dlq = await bus.ipc("test.dlq")
    pub = await bus.ipc("test.pub")
    letters: list[Envelope[dict[str, Any]]] = []

    def on_chat(msg: ChatMessage) -> None:
        pass

    def on_dead(env: Envelope[dict[str, Any]]) -> None:
        letters.append(env)

    sub = await receiver.subscribe("in.x", on_chat)
    await dlq.subscribe("dlq.>", on_dead)
    await ready(receiver, dlq)
    await pub.publish_raw("in.x", b"nope")
    await until(lambda: sub.stats.rejected == 1, "the rejection")
    await settle(pub, receiver, dlq)
    assert letters == []


async def test_a_failing_handler_does_not_stop_the_subscription(bus: Bus) -> None:
    log = RecordingLogger()
    receiver = await bus.ipc("test.receiver", logger=log)
    pub = await bus.ipc("test.pub")
    handled: list[str] = []

    async def on_chat(msg: ChatMessage) -> None:
        if msg.text == "boom":
            raise RuntimeError("handler bug")
        handled.append(msg.text)

    sub = await receiver.subscribe("in.x", on_chat)
    await ready(receiver)
    bad_id = await pub.publish("in.x", chat("boom"))
    await pub.publish("in.x", chat("next"))
    await count(handled, 1)
    assert handled == ["next"]
    stats = sub.stats
    assert (stats.received, stats.handled, stats.failed, stats.rejected) == (2, 1, 1, 0)
    assert log.problems() == ["handler failed"]
    ((level, kw),) = log.named("handler failed")
    assert level in ("error", "exception")
    assert kw["envelope_id"] == bad_id
    assert kw["subject"] == f"{bus.prefix}.in.x"
    assert "handler bug" in kw["error"]


# -- limits --------------------------------------------------------------------------------


async def test_publish_over_max_payload_is_refused(tmp_path: Path) -> None:
    server = EmbeddedNats(store_dir=tmp_path, max_payload=4096, jetstream=False)
    await server.start()
    small = Bus(server.url)
    try:
        receiver = await small.ipc("test.receiver")
        pub = await small.ipc("test.pub")
        assert pub.nc.max_payload == 4096
        got: list[str] = []

        def on_chat(msg: ChatMessage) -> None:
            got.append(msg.text)

        await receiver.subscribe("big", on_chat)
        await ready(receiver)

        with pytest.raises(PayloadTooLargeError) as info:
            await pub.publish("big", chat("x" * 5000))
        assert info.value.limit == 4096
        assert info.value.size > 5000
        assert info.value.subject == f"{small.prefix}.big"
        with pytest.raises(PayloadTooLargeError):
            await pub.publish_raw("big", b"y" * 4097)
        with pytest.raises(PayloadTooLargeError):
            await pub.request("big", chat("z" * 5000), Pong, timeout=WAIT)

        await pub.publish("big", chat("small"))
        await count(got, 1)
        await settle(pub, receiver)
        assert got == ["small"]
        assert pub.nc.is_connected  # nothing oversize reached the server
    finally:
        await small.close()
        await server.stop()
