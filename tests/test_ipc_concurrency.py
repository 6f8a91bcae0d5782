"""Handlers run side by side (``subscribe(..., concurrency=N)``) against a real nats-server:
started in arrival order, one waiting does not hold up the rest, each request answered by its
own handler, failures answered as errors, and a durable subscription refuses it."""

from __future__ import annotations

import asyncio

import pytest

from eeveepy.errors import OperatorError, RemoteError
from eeveepy.protocol.models import ChatMessage, Ping, Pong

pytest.register_assert_rewrite("tests.ipc_fixtures")  # imported here, before pytest_plugins

from tests.ipc_fixtures import Bus, chat, count, ready, until  # noqa: E402

pytest_plugins = ["tests.ipc_fixtures"]

WAIT = 5.0


async def test_a_waiting_handler_does_not_hold_up_the_next(bus: Bus) -> None:
    sub = await bus.ipc("test.sub")
    pub = await bus.ipc("test.pub")
    release = asyncio.Event()
    started: list[str] = []
    finished: list[str] = []

    async def on_chat(msg: ChatMessage) -> None:
        started.append(msg.text)
        if msg.text == "slow":
            await release.wait()
        finished.append(msg.text)

    await sub.subscribe("chat.c", on_chat, concurrency=4)
    await ready(sub)
    for text in ("slow", "a", "b"):
        await pub.publish("chat.c", chat(text))
    await count(finished, 2)
    assert started == ["slow", "a", "b"]  # started in arrival order
    assert finished == ["a", "b"]  # "slow" still waiting, the others done
    release.set()
    await count(finished, 3)


async def test_one_at_a_time_by_default(bus: Bus) -> None:
    sub = await bus.ipc("test.sub")
    pub = await bus.ipc("test.pub")
    release = asyncio.Event()
    finished: list[str] = []

    async def on_chat(msg: ChatMessage) -> None:
        if msg.text == "slow":
            await release.wait()
        finished.append(msg.text)

    await sub.subscribe("chat.c", on_chat)
    await ready(sub)
    for text in ("slow", "a"):
        await pub.publish("chat.c", chat(text))
    await asyncio.sleep(0.3)
    assert finished == []  # "a" waits behind "slow"
    release.set()
    await count(finished, 2)
    assert finished == ["slow", "a"]


async def test_at_most_the_limit_run_at_once(bus: Bus) -> None:
    sub = await bus.ipc("test.sub")
    pub = await bus.ipc("test.pub")
    release = asyncio.Event()
    running = 0
    most = 0
    done: list[str] = []

    async def on_chat(msg: ChatMessage) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        done.append(msg.text)

    subscription = await sub.subscribe("chat.c", on_chat, concurrency=3)
    await ready(sub)
    for n in range(8):
        await pub.publish("chat.c", chat(str(n)))
    await until(lambda: running == 3, "three handlers running")
    await asyncio.sleep(0.2)
    assert most == 3
    assert subscription.pending == 8  # 3 running, 5 waiting
    release.set()
    await count(done, 8)
    await subscription.idle()
    assert subscription.pending == 0


async def test_each_request_gets_its_own_answer(bus: Bus) -> None:
    responder = await bus.ipc("test.responder")
    client = await bus.ipc("test.client")

    async def on_ping(env: Ping) -> Pong:
        return Pong(operator="test.responder", state="running")

    async def on_fail(msg: Ping) -> Pong:
        await asyncio.sleep(0.05)
        raise ValueError("no such thing")

    await responder.subscribe("operator.ping.test.responder", on_ping, concurrency=8)
    await responder.subscribe("operator.ping.test.failing", on_fail, concurrency=8)
    await ready(responder)
    replies = await asyncio.gather(
        *(
            client.request("operator.ping.test.responder", Ping(), Pong, timeout=WAIT)
            for _ in range(20)
        )
    )
    assert all(r.body.operator == "test.responder" for r in replies)
    with pytest.raises(RemoteError, match="no such thing"):
        await client.request("operator.ping.test.failing", Ping(), Pong, timeout=WAIT)


async def test_concurrency_needs_a_plain_subscription(bus: Bus) -> None:
    sub = await bus.ipc("test.sub")

    async def on_chat(msg: ChatMessage) -> None:
        pass

    with pytest.raises(OperatorError, match="durable"):
        sub.subscribe("chat.c", on_chat, durable="d", concurrency=2)
    with pytest.raises(OperatorError, match="1 or more"):
        sub.subscribe("chat.c", on_chat, concurrency=0)
