"""Request/reply over the ipc layer against a real nats-server."""

from __future__ import annotations

import time

import pytest

from eeveepy.errors import (
    EnvelopeError,
    NoRespondersError,
    RemoteError,
    RequestTimeoutError,
)
from eeveepy.protocol.models import (
    ChatMessage,
    Control,
    ControlAction,
    ControlResult,
    Envelope,
    Ping,
    Pong,
)

pytest.register_assert_rewrite("tests.ipc_fixtures")  # imported here, before pytest_plugins

from tests.ipc_fixtures import (  # noqa: E402
    WAIT,
    Bus,
    RecordingLogger,
    count,
    ready,
)

pytest_plugins = ["tests.ipc_fixtures"]


# -- request / reply -----------------------------------------------------------------------


async def test_request_answered_by_the_returned_body(bus: Bus) -> None:
    responder = await bus.ipc("test.responder")
    client = await bus.ipc("test.client")

    def on_ping(msg: Ping) -> Pong:
        return Pong(operator="test.responder", state="running")

    await responder.subscribe("operator.ping.test.responder", on_ping)
    await ready(responder)

    reply = await client.request("operator.ping.test.responder", Ping(), Pong, timeout=WAIT)
    assert reply.body == Pong(operator="test.responder", state="running")
    assert reply.source == "test.responder"
    assert reply.kind == "pong"


async def test_respond_inside_a_handler(bus: Bus) -> None:
    responder = await bus.ipc("test.responder")
    client = await bus.ipc("test.client")
    answered: list[bool] = []

    async def on_ctl(env: Envelope[Control]) -> None:
        answered.append(
            await responder.respond(ControlResult(ok=True, message=f"did {env.body.action}"))
        )

    await responder.subscribe("operator.ctl.x", on_ctl)
    await ready(responder)
    assert await responder.respond(Pong(operator="x", state="running")) is False  # no handler

    reply = await client.request(
        "operator.ctl.x", Control(action=ControlAction.HALT), ControlResult, timeout=WAIT
    )
    assert reply.body.ok
    assert reply.body.message == "did halt"

    # A plain publish is not a request: respond() says so.
    await client.publish("operator.ctl.x", Control(action=ControlAction.RESUME))
    await count(answered, 2)
    assert answered == [True, False]


async def test_raising_handler_answers_with_an_error(bus: Bus) -> None:
    log = RecordingLogger()
    responder = await bus.ipc("test.responder", logger=log)
    client = await bus.ipc("test.client")

    def on_ping(msg: Ping) -> Pong:
        raise ValueError("boom at the responder")

    sub = await responder.subscribe("svc", on_ping)
    await ready(responder)

    with pytest.raises(RemoteError) as info:
        await client.request("svc", Ping(), Pong, timeout=WAIT)
    assert info.value.code == "ValueError"
    assert "boom at the responder" in str(info.value)
    assert "test.responder" in str(info.value)
    assert sub.stats.failed == 1
    assert sub.stats.handled == 0
    assert log.problems() == ["handler failed"]
    assert log.named("handler failed")[0][0] in ("error", "exception")


async def test_request_with_an_invalid_body_gets_an_error_reply(bus: Bus) -> None:
    responder = await bus.ipc("test.responder")
    client = await bus.ipc("test.client")
    handled: list[ChatMessage] = []

    def on_chat(msg: ChatMessage) -> Pong:
        handled.append(msg)
        return Pong(operator="x", state="running")

    sub = await responder.subscribe("svc", on_chat)
    await ready(responder)
    with pytest.raises(RemoteError) as info:
        await client.request("svc", Ping(), Pong, timeout=WAIT)
    assert info.value.code == "invalid"
    assert handled == []
    assert sub.stats.rejected == 1


async def test_reply_of_the_wrong_kind_raises(bus: Bus) -> None:
    responder = await bus.ipc("test.responder")
    client = await bus.ipc("test.client")

    def on_ping(msg: Ping) -> Pong:
        return Pong(operator="x", state="running")

    await responder.subscribe("svc", on_ping)
    await ready(responder)
    with pytest.raises(EnvelopeError, match="unexpected kind 'pong'"):
        await client.request("svc", Ping(), ControlResult, timeout=WAIT)


async def test_request_to_nobody(bus: Bus) -> None:
    client = await bus.ipc("test.client")
    started = time.monotonic()
    with pytest.raises(NoRespondersError, match=f"{bus.prefix}.nobody.home"):
        await client.request("nobody.home", Ping(), Pong, timeout=WAIT)
    assert time.monotonic() - started < WAIT


async def test_request_without_an_answer_times_out(bus: Bus) -> None:
    responder = await bus.ipc("test.responder")
    client = await bus.ipc("test.client")
    seen: list[Ping] = []

    def on_ping(msg: Ping) -> None:
        seen.append(msg)  # returns None: no answer

    await responder.subscribe("svc", on_ping)
    await ready(responder)
    started = time.monotonic()
    with pytest.raises(RequestTimeoutError):
        await client.request("svc", Ping(), Pong, timeout=0.3)
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 2.0
    assert len(seen) == 1
