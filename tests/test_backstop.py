"""The backstop: a stream's copies settled in passes, handled only when the fast path lost them.

Real nats-server and the real chat input stream; the receiver is an ipc with a fast-path
subscription and a backstop sharing a ``Once`` (as the router and the connectors' outboxes
have), the publisher a second ipc making stored publishes. The last test runs the real router.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from eeveepy.bus.backstop import BUSY, GRACE, TICK, msg_id_of, pause
from eeveepy.bus.client import barrier
from eeveepy.bus.delivery import Handling, Once
from eeveepy.bus.ipc import Ipc
from eeveepy.bus.streams import ensure_chat_in_stream
from eeveepy.protocol.models import ChatMessage, DeadLetter, Envelope
from tests.test_delivery import _close, _ipc, _line
from tests.test_router import system

CONSUMER = "router"


class Receiver:
    """A fast path and a backstop sharing one ``Once``; each handling counted by id and path.

    Ids in ``lose`` are dropped on the fast path (as if that copy never came); a line whose
    text is ``slow`` stays in progress for ``slow_for`` seconds.
    """

    def __init__(self, ipc: Ipc, slow_for: float = 0.0) -> None:
        self.ipc = ipc
        self.once = Once()
        self.lose: set[str] = set()
        self.slow_for = slow_for
        self.handled: Counter[tuple[str, str]] = Counter()
        self.at: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.ipc.subscribe("chat.in.>", self.on_fast, queue=CONSUMER)
        await self.ipc.subscribe("chat.in.>", self.on_stored, durable=CONSUMER, backstop=self.once)
        await barrier(self.ipc.nc)

    async def on_fast(self, env: Envelope[ChatMessage]) -> None:
        if env.id not in self.lose:
            self._take(env, "fast")

    async def on_stored(self, env: Envelope[ChatMessage]) -> None:
        if env.body.text == "boom":
            raise RuntimeError("a handler that keeps failing")
        self._take(env, "stream")

    def _take(self, env: Envelope[ChatMessage], path: str) -> None:
        handling, first = self.once.take(env.id)
        if not first:
            return
        self.handled[(env.id, path)] += 1
        self.at[env.id] = time.time()
        if env.body.text == "slow":
            task = asyncio.ensure_future(self._slow(handling.start()))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _slow(self, handling: Handling) -> None:
        await asyncio.sleep(self.slow_for)
        await handling.finish()

    def paths(self, ids: list[str]) -> Counter[str]:
        """How many of ``ids`` were handled on each path."""
        paths: Counter[str] = Counter()
        for (mid, path), n in self.handled.items():
            if mid in ids:
                paths[path] += n
        return paths

    def times(self, msg_id: str) -> int:
        return sum(n for (mid, _), n in self.handled.items() if mid == msg_id)


async def _publish(conn: Ipc, texts: list[str]) -> list[str]:
    """Stored publishes of ``texts``; their envelope ids."""
    subject = conn.subjects.chat_in("irc", "libera", "#a")
    ids = []
    for n, text in enumerate(texts):
        msg_id, payload = conn.encode(_line(Any, text, n))  # type: ignore[arg-type]
        await conn.store_raw(subject, payload, msg_id)
        ids.append(msg_id)
    return ids


async def _settled(conn: Ipc, stream: str, within: float) -> None:
    """Wait until the consumer has nothing pending or unacknowledged."""
    js = conn.nc.jetstream()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        info = await js.consumer_info(stream, CONSUMER)
        if info.num_ack_pending == 0 and info.num_pending == 0:
            return
        assert loop.time() < deadline, f"still pending: {info}"
        await asyncio.sleep(0.1)


@pytest.fixture
def prefix() -> str:
    return "bs" + uuid.uuid4().hex[:10]


async def test_a_burst_is_handled_once_on_the_fast_path_and_acknowledged(
    nats_url: str, prefix: str
) -> None:
    conn = await _ipc(nats_url, prefix, "irc.test")
    rx = Receiver(await _ipc(nats_url, prefix, "router"))
    try:
        stream = await ensure_chat_in_stream(conn.nc.jetstream(), prefix)
        await rx.start()
        ids = await _publish(conn, [f"line {n}" for n in range(500)])
        await _settled(conn, stream, 10)
        await asyncio.sleep(GRACE)  # nothing comes late either
        assert rx.paths(ids) == Counter({"fast": 500})
        assert all(rx.times(mid) == 1 for mid in ids)
        info = await conn.nc.jetstream().consumer_info(stream, CONSUMER)
        assert info.num_redelivered == 0
        assert (await conn.nc.jetstream().stream_info(stream)).state.messages == 0
    finally:
        await _close(conn, rx.ipc)


async def test_a_copy_lost_on_the_fast_path_is_handled_from_the_stream_after_the_grace(
    nats_url: str, prefix: str
) -> None:
    conn = await _ipc(nats_url, prefix, "irc.test")
    rx = Receiver(await _ipc(nats_url, prefix, "router"))
    try:
        stream = await ensure_chat_in_stream(conn.nc.jetstream(), prefix)
        await rx.start()
        subject = conn.subjects.chat_in("irc", "libera", "#a")
        lost_id, payload = conn.encode(_line(Any, "lost", 99))  # type: ignore[arg-type]
        rx.lose.add(lost_id)
        stored = time.time()
        await conn.store_raw(subject, payload, lost_id)
        others = await _publish(conn, ["before", "after"])
        await _settled(conn, stream, 10)
        assert rx.handled[(lost_id, "stream")] == 1
        assert rx.times(lost_id) == 1
        assert rx.at[lost_id] - stored >= GRACE  # the fast copy was given its chance
        assert rx.paths(others) == Counter({"fast": 2})
    finally:
        await _close(conn, rx.ipc)


async def test_a_copy_in_progress_is_kept_alive_and_acknowledged_when_done(
    nats_url: str, prefix: str
) -> None:
    """A handling that outlasts the server's ack wait: its copy is not delivered again (nor
    handled from the stream), and is acknowledged once done; the copies after it too."""
    conn = await _ipc(nats_url, prefix, "irc.test")
    rx = Receiver(await _ipc(nats_url, prefix, "router"), slow_for=7.0)
    try:
        js = conn.nc.jetstream()
        stream = await ensure_chat_in_stream(js, prefix)
        await rx.start()
        ids = await _publish(conn, ["slow", "quick"])
        await asyncio.sleep(3)
        info = await js.consumer_info(stream, CONSUMER)
        assert info.num_ack_pending == 1  # the slow one; the quick one is acknowledged
        await _settled(conn, stream, 10)
        info = await js.consumer_info(stream, CONSUMER)
        assert info.num_redelivered == 0
        assert rx.paths(ids) == Counter({"fast": 2})
    finally:
        await _close(conn, rx.ipc)


async def test_lines_stored_while_the_receiver_was_down_are_handled_once_at_its_start(
    nats_url: str, prefix: str
) -> None:
    conn = await _ipc(nats_url, prefix, "irc.test")
    first = Receiver(await _ipc(nats_url, prefix, "router"))
    rx = Receiver(await _ipc(nats_url, prefix, "router"))
    try:
        stream = await ensure_chat_in_stream(conn.nc.jetstream(), prefix)
        await first.start()  # creates the consumer
        await _close(first.ipc)
        ids = await _publish(conn, [f"meanwhile {n}" for n in range(20)])
        started = time.time()
        await rx.start()
        await _settled(conn, stream, 5)
        assert rx.paths(ids) == Counter({"stream": 20})
        assert all(rx.times(mid) == 1 for mid in ids)
        # Stored before the backstop started: no fast copy to wait for, handled at its first pass.
        assert max(rx.at.values()) - started < GRACE - 0.5
    finally:
        await _close(conn, rx.ipc)


async def test_the_router_answers_a_line_said_while_it_was_down_once(
    nats_url: str, tmp_path: Path
) -> None:
    async with system(nats_url, tmp_path) as s:
        js = s.ipc.nc.jetstream()
        stream = await ensure_chat_in_stream(js, s.prefix)
        router = await s.router()  # its consumer exists from now on
        await s.spawn("echo", "operators.echo")
        await s.wait_commands("echo")
        await router.stop()
        info = await js.consumer_info(stream, "router")
        assert (info.num_ack_pending, info.num_pending) == (0, 0)  # acknowledged as it stopped
        s.out.clear()
        subject = s.subjects.chat_in("irc", "libera", "#ops")
        lines = [_line(s, f"!echo {n}", n) for n in range(10)]
        for msg in lines:
            await s.ipc.publish_stored(subject, msg)
        await s.router()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        wanted = {msg.message_id for msg in lines}
        while wanted - {env.body.reply_to for env in s.out}:
            assert loop.time() < deadline, [env.body.text for env in s.out]
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # room for a repeat
        unique = {env.id: env for env in s.out}  # as a connector does: one per envelope id
        counts = Counter(env.body.reply_to for env in unique.values())
        assert all(counts[mid] == 1 for mid in wanted), counts
        assert sorted(env.body.text for env in unique.values()) == sorted(map(str, range(10)))


async def test_a_copy_whose_handler_keeps_failing_is_dead_lettered_once(
    nats_url: str, prefix: str
) -> None:
    conn = await _ipc(nats_url, prefix, "irc.test")
    rx = Receiver(await _ipc(nats_url, prefix, "router"))
    try:
        stream = await ensure_chat_in_stream(conn.nc.jetstream(), prefix)
        dead: asyncio.Queue[DeadLetter] = asyncio.Queue()

        async def on_dead(letter: DeadLetter) -> None:
            await dead.put(letter)

        await conn.subscribe("dlq.>", on_dead)
        await rx.start()
        subject = conn.subjects.chat_in("irc", "libera", "#a")
        boom_id, payload = conn.encode(_line(Any, "boom", 7))  # type: ignore[arg-type]
        rx.lose.add(boom_id)
        await conn.store_raw(subject, payload, boom_id)
        letter = await asyncio.wait_for(dead.get(), GRACE + 10 * TICK + 5)
        assert letter.subject == subject
        assert "handler failed" in letter.reason
        await _settled(conn, stream, 5)
        await asyncio.sleep(2 * TICK)
        assert dead.empty()
        assert rx.times(boom_id) == 0
    finally:
        await _close(conn, rx.ipc)


def test_message_ids_are_read_without_decoding() -> None:
    """(The ack subject's metadata: tests/test_delivery.py.)"""
    headers = b"NATS/1.0\r\nNats-Expected-Stream: S\r\nNats-Msg-Id: abc-1\r\n\r\n"
    assert msg_id_of(headers) == "abc-1"
    assert msg_id_of(b"NATS/1.0\r\nOther: x\r\n\r\n") == ""
    assert msg_id_of(b"") == ""


def test_passes_come_ten_times_as_often_while_many_copies_wait() -> None:
    """With the server's 1,024 unacknowledged copies at most, a pass each TICK would bound how
    fast the stream's copies keep up with the fast path; many waiting copies shorten it."""
    assert pause(0) == pause(BUSY - 1) == TICK
    assert pause(BUSY) == pause(1024) == TICK / 10
