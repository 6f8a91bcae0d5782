"""No acknowledged command is lost: chat input stored in JetStream, the router's durable
consumer, invocations run once. Real nats-server, real router and echo processes, SIGKILL
mid-burst; the test plays the connector (stored publishes) and counts the answers.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from eeveepy.bus.client import BusConfig, barrier, connect
from eeveepy.bus.delivery import Deliveries, ack_meta
from eeveepy.bus.ipc import Ipc
from eeveepy.bus.streams import chat_in_stream_name, ensure_chat_in_stream
from eeveepy.errors import DeliveryError
from eeveepy.protocol.models import ChatMessage, ChatUser, DeadLetter, Envelope
from eeveepy.protocol.subjects import Subjects
from tests.test_router import System, system

BURST = 500


def _line(s: System, text: str, n: int) -> ChatMessage:
    return ChatMessage(
        platform="irc",
        network="libera",
        room="#ops",
        user=ChatUser(id=f"u{n % 7}", name=f"u{n % 7}"),
        text=text,
        message_id=f"m{n}-{uuid.uuid4().hex[:6]}",
    )


async def _burst_with_kill(s: System, victim: Any, respawn: Any, after: int) -> Counter[str]:
    """Send BURST stored ``!echo N`` lines; SIGKILL ``victim`` once ``after`` answers came,
    then ``respawn()``; return the number of answers per message id once all are answered."""
    lines = [_line(s, f"!echo {n}", n) for n in range(BURST)]
    subject = s.subjects.chat_in("irc", "libera", "#ops")

    async def send() -> None:
        for msg in lines:
            await s.ipc.publish_stored(subject, msg)

    sender = asyncio.ensure_future(send())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while len(s.out) < after:
        assert loop.time() < deadline, f"only {len(s.out)} answers before the kill"
        await asyncio.sleep(0.001)
    await victim.stop(signal.SIGKILL)
    await respawn()
    await sender
    wanted = {msg.message_id for msg in lines}
    deadline = loop.time() + 30
    while wanted - {env.body.reply_to for env in s.out}:
        if loop.time() > deadline:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # room for a late duplicate
    # As a connector does: one message per envelope id (a repeat carries the same id).
    unique = {env.id: env for env in s.out}
    counts = Counter(env.body.reply_to or "" for env in unique.values())
    return Counter({mid: counts[mid] for mid in wanted})


def _verdict(counts: Counter[str], s: System) -> None:
    lost = [mid for mid, n in counts.items() if n == 0]
    twice = [mid for mid, n in counts.items() if n > 1]
    logs = "\n".join(p.log(2000) for p in s.procs)
    assert not lost, f"{len(lost)} of {BURST} never answered\n{logs}"
    assert not twice, f"{len(twice)} answered twice\n{logs}"


async def test_router_killed_mid_burst_loses_nothing(nats_url: str, tmp_path: Path) -> None:
    async with system(nats_url, tmp_path) as s:
        await ensure_chat_in_stream(s.ipc.nc.jetstream(), s.prefix)
        router = await s.router()
        await s.spawn("echo", "operators.echo")
        await s.wait_commands("echo")
        s.out.clear()

        async def respawn() -> None:
            await s.router()

        counts = await _burst_with_kill(s, router, respawn, after=BURST // 4)
        _verdict(counts, s)
        texts = {env.body.text for env in s.out}
        assert {f"{n}" for n in range(BURST)} <= texts  # every one really ran


async def test_echo_killed_mid_burst_every_command_answered_once(
    nats_url: str, tmp_path: Path
) -> None:
    async with system(nats_url, tmp_path) as s:
        await ensure_chat_in_stream(s.ipc.nc.jetstream(), s.prefix)
        await s.router({"timeout": 2.0})
        echo = await s.spawn("echo", "operators.echo")
        await s.wait_commands("echo")
        s.out.clear()

        async def respawn() -> None:
            await s.spawn("echo", "operators.echo")

        counts = await _burst_with_kill(s, echo, respawn, after=BURST // 4)
        _verdict(counts, s)
        failures = [e.body.text for e in s.out if not e.body.text.isdigit()]
        assert all("echo" in text for text in failures), failures  # reported, not silent


async def _ipc(url: str, prefix: str, source: str) -> Ipc:
    ipc = Ipc(Subjects(prefix), source)
    await ipc.attach(await connect(BusConfig(url=url), name=source))
    return ipc


async def _close(*ipcs: Ipc) -> None:
    for ipc in ipcs:
        nc = ipc.nc
        await ipc.detach()
        await nc.close()


@pytest.fixture
def prefix() -> str:
    return "dl" + uuid.uuid4().hex[:10]


async def test_stored_publish_is_stored_once_and_never_answered_by_subscribers(
    nats_url: str, prefix: str
) -> None:
    """A re-sent line (same id) is stored once; a chat.in subscriber whose handler fails
    does not answer the publisher's acknowledgement inbox."""
    conn = await _ipc(nats_url, prefix, "irc.test")
    listener = await _ipc(nats_url, prefix, "seen")
    try:
        js = conn.nc.jetstream()
        stream = await ensure_chat_in_stream(js, prefix)
        assert stream == chat_in_stream_name(prefix)

        async def broken(msg: ChatMessage) -> None:
            raise RuntimeError("a bug in a listener")

        await listener.subscribe("chat.in.>", broken)
        await barrier(listener.nc)
        subject = conn.subjects.chat_in("irc", "libera", "#a")
        msg_id, payload = conn.encode(_line(Any, "hello", 1))  # type: ignore[arg-type]
        for _ in range(3):
            await conn.store_raw(subject, payload, msg_id)
        info = await js.stream_info(stream)
        assert info.state.messages == 1
    finally:
        await _close(conn, listener)


async def test_stored_publish_without_stream_is_a_plain_publish(nats_url: str, prefix: str) -> None:
    conn = await _ipc(nats_url, prefix, "irc.test")
    got: asyncio.Queue[ChatMessage] = asyncio.Queue()

    async def on_line(msg: ChatMessage) -> None:
        await got.put(msg)

    try:
        await conn.subscribe("chat.in.>", on_line)
        await barrier(conn.nc)
        await conn.publish_stored(conn.subjects.chat_in("irc", "libera", "#a"), _line(Any, "x", 2))  # type: ignore[arg-type]
        assert (await asyncio.wait_for(got.get(), 5)).text == "x"
    finally:
        await _close(conn)


async def test_stored_publish_reports_a_stream_that_refuses(nats_url: str, prefix: str) -> None:
    conn = await _ipc(nats_url, prefix, "irc.test")
    try:
        js = conn.nc.jetstream()
        stream = await ensure_chat_in_stream(js, prefix)
        info = await js.stream_info(stream)
        # Limits that refuse new messages: the publisher is told, within its deadline.
        await js.update_stream(info.config.evolve(max_msgs=1, discard="new"))
        subject = conn.subjects.chat_in("irc", "libera", "#a")
        await conn.publish_stored(subject, _line(Any, "one", 3))  # type: ignore[arg-type]
        with pytest.raises(DeliveryError, match="not stored"):
            await conn.publish_stored(subject, _line(Any, "two", 4), deadline=0.5)  # type: ignore[arg-type]
    finally:
        await _close(conn)


async def test_durable_subscription_acks_holds_and_redelivers(nats_url: str, prefix: str) -> None:
    """Acknowledged after the handler, held until ack(), delivered again after a failure, and
    a payload that is not an envelope is dead-lettered once, not delivered forever."""
    conn = await _ipc(nats_url, prefix, "irc.test")
    worker = await _ipc(nats_url, prefix, "router")
    try:
        js = conn.nc.jetstream()
        stream = await ensure_chat_in_stream(js, prefix)
        seen: list[tuple[str, int]] = []
        held: list[Any] = []

        async def handle(env: Envelope[ChatMessage]) -> None:
            delivery = worker.hold()
            assert delivery is not None
            seen.append((env.body.text, delivery.attempt))
            if env.body.text == "fail" and delivery.attempt == 1:
                raise RuntimeError("first time fails")
            if env.body.text == "hold":
                held.append(delivery)
                return
            await delivery.ack()

        dead: asyncio.Queue[DeadLetter] = asyncio.Queue()

        async def on_dead(letter: DeadLetter) -> None:
            await dead.put(letter)

        await conn.subscribe("dlq.>", on_dead)
        await worker.subscribe("chat.in.>", handle, durable="router")
        await barrier(worker.nc)
        subject = conn.subjects.chat_in("irc", "libera", "#a")
        for n, text in enumerate(["ok", "fail", "hold"]):
            await conn.publish_stored(subject, _line(Any, text, n))  # type: ignore[arg-type]
        await conn.store_raw(subject, b"not json", "bad-1")
        letter = await asyncio.wait_for(dead.get(), 10)
        assert letter.subject == subject
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while ("fail", 2) not in seen or not held:
            assert loop.time() < deadline, seen
            await asyncio.sleep(0.05)
        info = await js.consumer_info(stream, "router")
        assert info.num_ack_pending == 1  # only the held one
        await asyncio.sleep(6)  # past the server's ack wait: kept alive, not redelivered
        assert [t for t, _ in seen].count("hold") == 1
        await held[0].ack()
        await asyncio.sleep(0.3)
        info = await js.consumer_info(stream, "router")
        assert info.num_ack_pending == 0
        assert (await js.stream_info(stream)).state.messages == 0
        assert dead.empty()
    finally:
        await _close(conn, worker)


def test_ack_subjects_are_parsed_in_both_forms() -> None:
    assert ack_meta("$JS.ACK.S.c.3.17.9.1700000000000000000.0") == ("c", 3, 17, 1.7e9)
    v2 = "$JS.ACK._.ACCHASH.S.c.2.42.7.1700000000500000000.5.xyz"
    assert ack_meta(v2) == ("c", 2, 42, 1700000000.5)
    assert ack_meta("_INBOX.abc.def") is None
    assert ack_meta("_INBOX.a.b.c.d.e.f.g.h") is None
    assert ack_meta("$JS.ACK.S.c.x.1.2.3.4") is None


async def test_a_repeat_of_a_done_delivery_is_acknowledged_again(nats_url: str) -> None:
    """The first acknowledgement was lost (the bus went away): the redelivered copy is not
    handled again, but acknowledged again; a copy of one still being handled is left alone."""
    nc = await connect(BusConfig(url=nats_url), name="acks")
    try:
        deliveries = Deliveries(nc)
        done = "$JS.ACK.S.router.1.17.9.1700000000000000000.0"
        busy = "$JS.ACK.S.router.1.18.10.1700000000000000000.0"
        acks: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

        async def on_ack(msg: Any) -> None:
            await acks.put((msg.subject, msg.data))

        await nc.subscribe("$JS.ACK.S.router.>", cb=on_ack)
        await barrier(nc)
        first = deliveries.begin(done)
        assert first is not None
        await first.ack()
        assert await asyncio.wait_for(acks.get(), 5) == (done, b"+ACK")
        assert deliveries.begin(busy) is not None  # being handled
        redelivered = done.replace(".1.17.", ".2.17.")  # delivery 2 of stream message 17
        assert deliveries.begin(redelivered) is None
        await deliveries.repeat(redelivered)
        assert await asyncio.wait_for(acks.get(), 5) == (redelivered, b"+ACK")
        assert deliveries.begin(busy.replace(".1.18.", ".2.18.")) is None
        await deliveries.repeat(busy.replace(".1.18.", ".2.18."))
        await barrier(nc)
        assert acks.empty()  # the copy being handled acknowledges it, not the repeat
        await deliveries.close()
    finally:
        await nc.close()


async def test_store_soon_completes_once_stored_and_sends_again_like_publish_stored(
    nats_url: str, prefix: str
) -> None:
    """``store_soon`` sends at once and completes when the stream has the message; a first try
    the stream refuses is sent again (in a task) until the deadline, then fails as
    ``publish_stored`` does; cancelling the result ends the sending again."""
    conn = await _ipc(nats_url, prefix, "irc.test")

    def retrying() -> list[asyncio.Task[Any]]:
        return [
            t
            for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "__qualname__", "") == "Publisher.store_raw"
        ]

    try:
        js = conn.nc.jetstream()
        stream = await ensure_chat_in_stream(js, prefix)
        subject = conn.subjects.chat_in("irc", "libera", "#a")
        stored = await conn.store_soon(subject, _line(Any, "one", 5))  # type: ignore[arg-type]
        await asyncio.wait_for(stored, 5)
        info = await js.stream_info(stream)
        assert info.state.messages == 1
        assert not retrying()  # the receipt came: no task was needed
        await js.update_stream(info.config.evolve(max_msgs=1, discard="new"))
        refused = await conn.store_soon(subject, _line(Any, "two", 6), deadline=0.5)  # type: ignore[arg-type]
        with pytest.raises(DeliveryError, match="not stored"):
            await asyncio.wait_for(refused, 5)
        given_up = await conn.store_soon(subject, _line(Any, "three", 7))  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not retrying():
            assert loop.time() < deadline, "the refused message was not sent again"
            await asyncio.sleep(0.01)
        given_up.cancel()
        await asyncio.sleep(0.05)
        assert not retrying()
        assert (await js.stream_info(stream)).state.messages == 1
    finally:
        await _close(conn)
