"""Logs: line capture, shipping, the stderr writer, the history stream and reading it back."""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import pytest_asyncio
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StorageType

from eeveepy.bus.client import BusConfig, barrier, connect
from eeveepy.bus.ipc import Ipc
from eeveepy.errors import BusError
from eeveepy.logs import (
    MAX_LINE_BYTES,
    LogFilter,
    LogQueryError,
    LogReadStats,
    LogShipper,
    StderrJsonWriter,
    configure_operator_logging,
    configure_supervisor_logging,
    ensure_log_stream,
    level_from_name,
    parse_since,
    read_logs,
    record_from_line,
    relay_record,
    render,
    stream_name,
)
from eeveepy.protocol.codec import EnvelopeDecoder, EnvelopeEncoder
from eeveepy.protocol.models import Envelope, LogLevel, LogRecord
from eeveepy.protocol.subjects import Subjects

WAIT = 5.0


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def rec(operator: str, event: str, level: LogLevel = LogLevel.INFO, /, **fields: Any) -> LogRecord:
    return LogRecord(operator=operator, level=level, event=event, fields=fields)


def env_of(record: LogRecord, when: datetime | None = None) -> Envelope[LogRecord]:
    _, payload = EnvelopeEncoder("supervisor").encode(record, timestamp=when)
    return EnvelopeDecoder(LogRecord).decode(payload)


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    try:
        yield
    finally:
        factory = structlog.get_config().get("logger_factory")
        if isinstance(factory, StderrJsonWriter):
            factory.close(0.5)
        structlog.configure(**saved)


@pytest_asyncio.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await connect(BusConfig(url=nats_url), name="test-logs", reconnect=False)
    try:
        yield client
    finally:
        await client.close()


@pytest_asyncio.fixture
async def ipc(nc: NatsClient) -> Ipc:
    i = Ipc(Subjects(unique_prefix()), "supervisor")
    await i.attach(nc)
    return i


class Collector:
    """Every log envelope published under a prefix, as received on a plain subscription."""

    def __init__(self) -> None:
        self.envs: list[Envelope[LogRecord]] = []
        self.subjects: list[str] = []
        self._decoder = EnvelopeDecoder(LogRecord)
        self._arrived = asyncio.Event()

    async def start(self, nc: NatsClient, prefix: str) -> None:
        async def cb(msg: Any) -> None:
            self.subjects.append(msg.subject)
            self.envs.append(self._decoder.decode(msg.data))
            self._arrived.set()

        await nc.subscribe(f"{prefix}.log.>", cb=cb)
        await barrier(nc)

    async def wait_for(self, n: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.envs) < n:
                self._arrived.clear()
                await self._arrived.wait()

    @property
    def events(self) -> list[str]:
        return [e.body.event for e in self.envs]


# ---------------------------------------------------------------------------------------------
# record_from_line


def test_json_line_keeps_level_time_and_fields() -> None:
    line = json.dumps(
        {
            "event": "joined",
            "level": "warning",
            "timestamp": "2026-01-02T03:04:05.123456Z",
            "logger": "irc",
            "operator": "irc.libera",
            "room": "#x",
            "n": [1, {"a": None}],
        }
    )
    r = record_from_line("irc.libera", line, "stderr")
    assert r.operator == "irc.libera"
    assert r.level is LogLevel.WARNING
    assert r.event == "joined"
    assert r.time == datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert r.stream == "stderr"
    assert r.fields == {"logger": "irc", "room": "#x", "n": [1, {"a": None}]}


def test_json_line_claiming_another_operator_keeps_the_claim_in_fields() -> None:
    r = record_from_line("echo", '{"event": "x", "operator": "other"}', "stderr")
    assert r.operator == "echo"
    assert r.fields == {"operator": "other"}


@pytest.mark.parametrize(
    ("given_level", "expected"),
    [
        ("debug", LogLevel.DEBUG),
        ("info", LogLevel.INFO),
        ("warn", LogLevel.WARNING),
        ("WARNING", LogLevel.WARNING),
        ("exception", LogLevel.ERROR),
        ("error", LogLevel.ERROR),
        ("fatal", LogLevel.CRITICAL),
        ("critical", LogLevel.CRITICAL),
        ("notice", LogLevel.INFO),
        (42, LogLevel.INFO),
        (None, LogLevel.INFO),
    ],
)
def test_level_mapping(given_level: Any, expected: LogLevel) -> None:
    assert level_from_name(given_level) is expected
    r = record_from_line("x", json.dumps({"event": "e", "level": given_level}), "stdout")
    assert r.level is expected


def test_json_line_without_level_or_with_a_bad_timestamp() -> None:
    before = datetime.now(UTC)
    r = record_from_line("x", '{"event": "e", "timestamp": "yesterday"}', "stdout")
    assert r.level is LogLevel.INFO
    assert r.time is not None
    assert r.time >= before
    naive = record_from_line("x", '{"event": "e", "timestamp": "2026-01-02T03:04:05"}', "stdout")
    assert naive.time is not None
    assert naive.time != datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert "timestamp" not in r.fields


@pytest.mark.parametrize(
    "line",
    [
        "plain text",
        "{not json",
        '{"message": "no event key"}',
        '{"event": 42}',
        "[1, 2, 3]",
        '"event"',
    ],
)
@pytest.mark.parametrize(("stream", "level"), [("stdout", "info"), ("stderr", "warning")])
def test_other_lines_are_plain_events(line: str, stream: Any, level: str) -> None:
    r = record_from_line("echo", line, stream)
    assert r.event == line
    assert r.level.value == level
    assert r.stream == stream
    assert r.fields == {}


def test_plain_text_loses_control_characters_and_is_cut() -> None:
    r = record_from_line("echo", "a\tb\x1b[31mred\x00\x7f\x85end\r", "stdout")
    assert r.event == "a\tb[31mredend"
    long = record_from_line("echo", "é" * MAX_LINE_BYTES, "stdout")
    assert len(long.event.encode()) <= MAX_LINE_BYTES
    assert long.event == "é" * (MAX_LINE_BYTES // 2)


def test_json_with_lone_surrogates_and_deep_nesting_still_serializes() -> None:
    deep = "[" * 200 + "]" * 200
    line = f'{{"event": "bad \\ud800", "k\\udc00": "\\udfff", "deep": {deep}}}'
    r = record_from_line("x", line, "stderr")
    assert r.event.startswith("bad ")
    EnvelopeEncoder("supervisor").encode(r)  # does not raise


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(),
        st.text(alphabet=st.characters(max_codepoint=0x9F)),
        st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=8), st.integers(0, 9000)),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner),
            max_leaves=20,
        ).map(lambda v: json.dumps({"event": "e", "level": "warn", "v": v})),
        st.dictionaries(st.text(), st.text() | st.integers()).map(json.dumps),
    ),
    st.sampled_from(["stdout", "stderr"]),
)
def test_record_from_line_never_raises(line: str, stream: Any) -> None:
    r = record_from_line("op.x", line, stream)
    assert r.stream == stream
    assert r.operator == "op.x"
    EnvelopeEncoder("supervisor").encode(r)  # always publishable
    if r.fields == {} and not line.strip().startswith("{"):
        assert len(r.event.encode()) <= MAX_LINE_BYTES
        assert not any(ord(c) < 32 and c != "\t" for c in r.event)


# ---------------------------------------------------------------------------------------------
# LogShipper


async def test_shipper_publishes_in_order(nc: NatsClient, ipc: Ipc) -> None:
    seen = Collector()
    await seen.start(nc, ipc.subjects.prefix)
    shipper = LogShipper(ipc)
    shipper.start()
    for i in range(50):
        shipper.submit(rec("echo" if i % 2 else "irc.libera", str(i), LogLevel.WARNING))
    await seen.wait_for(50)
    await shipper.stop()
    assert seen.events == [str(i) for i in range(50)]
    p = ipc.subjects.prefix
    assert seen.subjects[:2] == [f"{p}.log.warning.irc.libera", f"{p}.log.warning.echo"]
    assert shipper.dropped == 0
    assert shipper.published == 50


async def test_shipper_drops_oldest_then_reports(nc: NatsClient, ipc: Ipc) -> None:
    seen = Collector()
    await seen.start(nc, ipc.subjects.prefix)
    shipper = LogShipper(ipc, capacity=10)
    for i in range(25):
        shipper.submit(rec("echo", str(i)))
    assert shipper.dropped == 15
    shipper.start()
    await seen.wait_for(11)
    await shipper.stop()
    warnings = [e.body for e in seen.envs if e.body.event == "log events dropped"]
    assert len(warnings) == 1
    assert warnings[0].fields == {"dropped": 15}
    assert warnings[0].operator == "supervisor"
    assert warnings[0].level is LogLevel.WARNING
    assert [e for e in seen.events if e != "log events dropped"] == [str(i) for i in range(15, 25)]


async def test_shipper_retries_until_the_bus_is_there(nc: NatsClient) -> None:
    ipc = Ipc(Subjects(unique_prefix()), "supervisor")  # not attached: publish fails
    seen = Collector()
    await seen.start(nc, ipc.subjects.prefix)
    shipper = LogShipper(ipc, max_backoff=0.1)
    shipper.start()
    for i in range(3):
        shipper.submit(rec("echo", str(i)))
    await asyncio.sleep(0.3)
    assert shipper.pending == 3
    await ipc.attach(nc)
    await seen.wait_for(3)
    await shipper.stop()
    assert seen.events == ["0", "1", "2"]


async def test_shipper_skips_records_it_can_never_publish(nc: NatsClient, ipc: Ipc) -> None:
    seen = Collector()
    await seen.start(nc, ipc.subjects.prefix)
    shipper = LogShipper(ipc)
    shipper.submit(rec("Not A Valid Id", "lost"))
    shipper.submit(rec("echo", "kept"))
    shipper.start()
    await seen.wait_for(1)
    await shipper.stop()
    assert seen.events == ["kept"]
    assert shipper.failed == 1


async def test_shipper_stop_flushes_and_submit_from_threads(nc: NatsClient, ipc: Ipc) -> None:
    seen = Collector()
    await seen.start(nc, ipc.subjects.prefix)
    shipper = LogShipper(ipc)
    shipper.start()
    await asyncio.sleep(0)

    def spam(k: int) -> None:
        for i in range(100):
            shipper.submit(rec("t", f"{k}.{i}"))

    threads = [threading.Thread(target=spam, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    await shipper.stop(timeout=WAIT)
    await barrier(nc)
    await seen.wait_for(400)
    assert shipper.pending == 0
    for k in range(4):  # each thread's records stay in its order
        mine = [e for e in seen.events if e.startswith(f"{k}.")]
        assert mine == [f"{k}.{i}" for i in range(100)]


# ---------------------------------------------------------------------------------------------
# The operator's stderr writer


def test_writer_never_blocks_on_a_stuck_pipe(restore_structlog: None) -> None:
    r, w = os.pipe()
    out = os.fdopen(w, "w", encoding="utf-8")
    writer = configure_operator_logging(
        "echo", json_lines=True, stream=out, capacity=1000
    )  # nobody reads the pipe yet
    assert writer is not None
    log = structlog.get_logger("test")
    n = 100_000
    start = time.monotonic()
    worst = 0.0
    for i in range(n):
        t0 = time.perf_counter()
        log.info("tick", i=i)
        worst = max(worst, time.perf_counter() - t0)
    elapsed = time.monotonic() - start
    assert elapsed < 10, elapsed
    assert worst < 0.5, worst
    assert writer.dropped > n // 2

    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(r, 65536), b"")))
    reader.start()
    assert writer.flush(WAIT)
    writer.close(WAIT)
    out.close()
    reader.join(WAIT)
    os.close(r)
    lines = [json.loads(x) for x in b"".join(chunks).decode().splitlines()]
    ticks = [x for x in lines if x["event"] == "tick"]
    drops = [x for x in lines if x["event"] == "log lines dropped"]
    assert drops
    assert all(d["level"] == "warning" and d["operator"] == "echo" for d in drops)
    assert sum(d["dropped"] for d in drops) == writer.dropped
    assert len(ticks) + writer.dropped == n  # every call is either written or counted
    first = ticks[0]
    assert first["operator"] == "echo"
    assert first["logger"] == "test"
    assert first["level"] == "info"
    assert first["timestamp"].endswith("Z")
    assert first["i"] == 0
    assert [t["i"] for t in ticks] == sorted(t["i"] for t in ticks)


def test_operator_json_lines_round_trip_through_record_from_line(
    restore_structlog: None,
) -> None:
    out = io.StringIO()
    writer = configure_operator_logging("irc.libera", json_lines=True, stream=out, level="debug")
    assert writer is not None
    log = structlog.get_logger("irc").bind(room="#x")
    log.debug("hello", n=1)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    assert writer.flush(WAIT)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    hello = record_from_line("irc.libera", lines[0], "stderr")
    assert hello.level is LogLevel.DEBUG
    assert hello.event == "hello"
    assert hello.fields == {"logger": "irc", "room": "#x", "n": 1}
    failed = record_from_line("irc.libera", lines[1], "stderr")
    assert failed.level is LogLevel.ERROR
    assert "RuntimeError: boom" in failed.fields["exception"]


def test_operator_json_lines_stay_within_the_line_limit(restore_structlog: None) -> None:
    out = io.StringIO()
    writer = configure_operator_logging("echo", json_lines=True, stream=out)
    assert writer is not None
    log = structlog.get_logger("big")
    log.info("small", x=1)
    log.info("huge", blob="é" * 50_000, items=list(range(5000)), note="end of blob")
    log.info("x" * 100_000)
    assert writer.flush(WAIT)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert all(len(line.encode()) <= MAX_LINE_BYTES for line in lines)
    small, huge, long_event = (json.loads(line) for line in lines)
    assert "truncated" not in small
    assert huge["truncated"] is True
    assert huge["event"] == "huge"
    assert huge["note"] == "end of blob"
    assert "...[cut]..." in huge["blob"]
    assert long_event["truncated"] is True
    assert long_event["event"].startswith("xxx")
    r = record_from_line("echo", lines[1], "stderr")
    assert r.event == "huge"
    assert r.fields["truncated"] is True


def test_operator_console_logging_and_level(restore_structlog: None) -> None:
    out = io.StringIO()
    assert configure_operator_logging("echo", json_lines=False, stream=out, level="warning") is None
    log = structlog.get_logger("echo")
    log.info("hidden")
    log.warning("shown", k=1)
    text = out.getvalue()
    assert "hidden" not in text
    assert "shown" in text
    assert "\033[" not in text
    with pytest.raises(LogQueryError):
        configure_operator_logging("echo", json_lines=False, level="loud")


def test_supervisor_logging_ships_its_own_events_only(restore_structlog: None) -> None:
    shipped: list[LogRecord] = []
    out = io.StringIO()
    configure_supervisor_logging(shipped.append, json=True, level="info", stream=out)
    log = structlog.get_logger("eeveepy.supervisor").bind(supervisor="sup1")
    log.info("state", operator="echo", state="running", path=os.sep)
    log.debug("not shown")
    relay_record(
        LogRecord(
            operator="echo",
            level=LogLevel.ERROR,
            event="from the operator",
            fields={"event": "clash", "x": 1},
        )
    )
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("crash")
    assert [r.event for r in shipped] == ["state", "crash"]
    state = shipped[0]
    assert state.operator == "supervisor"
    assert state.level is LogLevel.INFO
    assert state.fields["operator"] == "echo"
    assert state.fields["supervisor"] == "sup1"
    assert state.fields["logger"] == "eeveepy.supervisor"
    assert "ValueError: bad" in shipped[1].fields["exception"]
    assert shipped[1].level is LogLevel.ERROR
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    relayed = lines[1]
    assert relayed["event"] == "from the operator"
    assert relayed["operator"] == "echo"
    assert relayed["level"] == "error"
    assert relayed["event_"] == "clash"
    assert "_relayed" not in relayed
    # Without a submit function, the relay marker is still dropped.
    out2 = io.StringIO()
    configure_supervisor_logging(None, json=False, level="info", stream=out2)
    relay_record(rec("echo", "plain"))
    assert "plain" in out2.getvalue()
    assert "_relayed" not in out2.getvalue()


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
# parse_since, LogFilter, render


NOW = datetime(2026, 5, 6, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", NOW - timedelta(seconds=30)),
        ("10m", NOW - timedelta(minutes=10)),
        ("1h", NOW - timedelta(hours=1)),
        ("2d", NOW - timedelta(days=2)),
        ("1w", NOW - timedelta(weeks=1)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("2026-05-06T10:00:00Z", datetime(2026, 5, 6, 10, tzinfo=UTC)),
        ("2026-05-06T10:00:00", datetime(2026, 5, 6, 10, tzinfo=UTC)),
        ("2026-05-06T12:00:00+02:00", datetime(2026, 5, 6, 10, tzinfo=UTC)),
        ("2026-05-06", datetime(2026, 5, 6, tzinfo=UTC)),
    ],
)
def test_parse_since(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "10", "ten minutes", "5y", "-1h", "99999999999999d"])
def test_parse_since_rejects(text: str) -> None:
    with pytest.raises(LogQueryError):
        parse_since(text, NOW)


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


def test_render() -> None:
    when = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    r = LogRecord(
        operator="irc.libera",
        level=LogLevel.WARNING,
        event="joined\x1b[2J",
        time=when,
        fields={"room": "#x", "text": "two words", "n": 3, "nested": {"a": [1]}, "nl": "a\nb"},
    )
    line = render(env_of(r), color=False)
    assert line == (
        '07:08:09.123 WARNING  irc.libera joined\\x1b[2J room=#x text="two words" n=3 '
        'nested={"a":[1]} nl="a\\nb"'
    )
    assert "\n" not in line
    colored = render(env_of(r), color=True)
    assert "\033[33mWARNING" in colored
    plus2 = render(env_of(r), color=False, tz=timezone(timedelta(hours=2)))
    assert plus2.startswith("09:08:09.123 ")
