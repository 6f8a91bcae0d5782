"""The history stream (eeveepy.logs.stream) and reading it back (eeveepy.logs.history)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StorageType

from eeveepy.bus.client import barrier
from eeveepy.bus.ipc import Ipc
from eeveepy.errors import BusError
from eeveepy.logs.history import LogFilter, LogReadStats, read_logs
from eeveepy.logs.stream import ensure_log_stream, stream_name
from eeveepy.protocol.models import LogLevel
from eeveepy.protocol.subjects import Subjects

pytest.register_assert_rewrite("tests.logs_fixtures")  # imported here, before pytest_plugins

from tests.logs_fixtures import WAIT, env_of, rec, unique_prefix  # noqa: E402

pytest_plugins = ["tests.logs_fixtures"]


# ---------------------------------------------------------------------------------------------
# The stream


def test_stream_name() -> None:
    assert stream_name("eevee") == "EEVEE_LOGS"
    assert stream_name("acme.bot-1") == "ACME_BOT-1_LOGS"


async def test_ensure_log_stream_is_idempotent_and_updates(nc: NatsClient) -> None:
    js = nc.jetstream()
    prefix = unique_prefix()
    name = stream_name(prefix)
    try:
        await ensure_log_stream(js, prefix, max_age=3600, max_bytes=1 << 20)
        await ensure_log_stream(js, prefix, max_age=3600, max_bytes=1 << 20)
        info = await js.stream_info(name)
        assert info.config.subjects == [f"{prefix}.log.>"]
        assert info.config.storage == StorageType.FILE
        assert info.config.discard == DiscardPolicy.OLD
        await ensure_log_stream(js, prefix, max_age=60, max_bytes=2 << 20)
        info = await js.stream_info(name)
        assert info.config.max_age == pytest.approx(60)
        assert info.config.max_bytes == 2 << 20
    finally:
        await js.delete_stream(name)


async def test_ensure_log_stream_failure_is_a_bus_error(nc: NatsClient) -> None:
    js = nc.jetstream()
    prefix = unique_prefix()
    other = f"OTHER_{prefix.upper()}"
    await js.add_stream(name=other, subjects=[f"{prefix}.>"])
    try:
        with pytest.raises(BusError, match=stream_name(prefix)):
            await ensure_log_stream(js, prefix, max_age=60, max_bytes=1 << 20)
    finally:
        await js.delete_stream(other)


# ---------------------------------------------------------------------------------------------
# Reading


@pytest_asyncio.fixture
async def history(nc: NatsClient) -> AsyncIterator[tuple[JetStreamContext, Ipc, datetime]]:
    """A log stream holding a known history; yields (js, ipc, a time between two batches)."""
    js = nc.jetstream()
    prefix = unique_prefix()
    await ensure_log_stream(js, prefix, max_age=600, max_bytes=1 << 22)
    ipc = Ipc(Subjects(prefix), "supervisor")
    await ipc.attach(nc)
    s = ipc.subjects
    early = [
        rec("echo", "e1"),
        rec("irc.libera", "i1", LogLevel.WARNING, room="#Needle"),
        rec("supervisor", "s1", LogLevel.ERROR, operator="echo"),
    ]
    for r in early:
        await ipc.publish(s.log(r.operator, r.level.value), r)
    await ipc.publish_raw(s.log("echo", "info"), b"not an envelope")
    await barrier(nc)
    await asyncio.sleep(0.05)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.05)
    late = [
        rec("echo", "e2", LogLevel.DEBUG),
        rec("irc.oftc", "i2", LogLevel.CRITICAL),
        rec("echo", "e3 needle"),
    ]
    for r in late:
        await ipc.publish(s.log(r.operator, r.level.value), r)
    await barrier(nc)
    try:
        yield js, ipc, middle
    finally:
        await js.delete_stream(stream_name(prefix))


async def collect(
    js: JetStreamContext, prefix: str, flt: LogFilter, tail: int | None = None
) -> list[str]:
    async with asyncio.timeout(WAIT):
        return [e.body.event async for e in read_logs(js, prefix, flt, follow=False, tail=tail)]


async def test_read_everything_and_skip_malformed(
    history: tuple[JetStreamContext, Ipc, datetime],
) -> None:
    js, ipc, _ = history
    stats = LogReadStats()
    async with asyncio.timeout(WAIT):
        got = [
            e.body.event
            async for e in read_logs(
                js, ipc.subjects.prefix, LogFilter(), follow=False, tail=None, stats=stats
            )
        ]
    assert got == ["e1", "i1", "s1", "e2", "i2", "e3 needle"]
    assert stats.skipped == 1
    assert stats.matched == 6


async def test_read_filters(history: tuple[JetStreamContext, Ipc, datetime]) -> None:
    js, ipc, middle = history
    p = ipc.subjects.prefix
    # The supervisor's events about echo ("s1" has fields operator=echo) belong to echo.
    assert await collect(js, p, LogFilter(operators=["echo"])) == ["e1", "s1", "e2", "e3 needle"]
    assert await collect(js, p, LogFilter(operators=["echo", "irc.oftc"])) == [
        "e1",
        "s1",
        "e2",
        "i2",
        "e3 needle",
    ]
    assert await collect(js, p, LogFilter(operators=["irc.*"])) == ["i1", "i2"]
    assert await collect(js, p, LogFilter(min_level=LogLevel.WARNING)) == ["i1", "s1", "i2"]
    assert await collect(js, p, LogFilter(operators=["echo"], min_level=LogLevel.INFO)) == [
        "e1",
        "s1",
        "e3 needle",
    ]
    assert await collect(js, p, LogFilter(grep="NEEDLE")) == ["i1", "e3 needle"]
    assert await collect(js, p, LogFilter(since=middle)) == ["e2", "i2", "e3 needle"]
    assert await collect(js, p, LogFilter(), tail=2) == ["i2", "e3 needle"]
    assert await collect(js, p, LogFilter(operators=["echo"]), tail=2) == ["e2", "e3 needle"]
    assert await collect(js, p, LogFilter(since=middle), tail=1) == ["e3 needle"]
    assert await collect(js, p, LogFilter(), tail=0) == []
    assert await collect(js, p, LogFilter(operators=["nobody"])) == []


async def test_read_an_empty_stream_ends(nc: NatsClient) -> None:
    js = nc.jetstream()
    prefix = unique_prefix()
    await ensure_log_stream(js, prefix, max_age=60, max_bytes=1 << 20)
    try:
        assert await collect(js, prefix, LogFilter()) == []
    finally:
        await js.delete_stream(stream_name(prefix))


async def test_read_a_missing_stream_is_a_bus_error(nc: NatsClient) -> None:
    with pytest.raises(BusError, match="no log stream"):
        await collect(nc.jetstream(), unique_prefix(), LogFilter())


async def test_follow_sees_new_records(history: tuple[JetStreamContext, Ipc, datetime]) -> None:
    js, ipc, _ = history
    got: list[str] = []
    arrived = asyncio.Event()

    async def reader() -> None:
        flt = LogFilter(operators=["echo"])
        async for e in read_logs(js, ipc.subjects.prefix, flt, follow=True, tail=1):
            got.append(e.body.event)
            arrived.set()

    task = asyncio.create_task(reader())
    try:
        async with asyncio.timeout(WAIT):
            await arrived.wait()
            assert got == ["e3 needle"]
            arrived.clear()
            await ipc.publish(ipc.subjects.log("irc.oftc", "info"), rec("irc.oftc", "skip"))
            await ipc.publish(ipc.subjects.log("echo", "info"), rec("echo", "live"))
            await arrived.wait()
        assert got == ["e3 needle", "live"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# ---------------------------------------------------------------------------------------------
# LogFilter


def test_filter_subjects_and_naive_since() -> None:
    assert LogFilter().subjects("p") == ["p.log.>"]
    assert LogFilter(operators=["echo"]).subjects("p") == ["p.log.*.echo", "p.log.*.supervisor"]
    assert LogFilter(operators=["irc.*"]).subjects("p") == ["p.log.>"]
    errors = LogFilter(min_level=LogLevel.ERROR)
    assert errors.subjects("p") == ["p.log.error.>", "p.log.critical.>"]
    assert LogFilter(operators=["Bad Id"]).subjects("p") == ["p.log.>"]
    naive = LogFilter(since=datetime(2026, 1, 1))
    assert naive.since == datetime(2026, 1, 1, tzinfo=UTC)
    old = env_of(rec("x", "e"), datetime(2025, 12, 31, tzinfo=UTC))
    assert not naive.matches(old)
