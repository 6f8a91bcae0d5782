"""The structlog setup (eeveepy.logs.setup) and where its lines go (eeveepy.logs.writer):
an operator's JSON lines into a stuck pipe, within the line limit, back into records; the
supervisor's events shipped, relayed ones not."""

from __future__ import annotations

import io
import json
import os
import threading
import time

import pytest
import structlog

from eeveepy.errors import LogQueryError
from eeveepy.logs.records import MAX_LINE_BYTES, record_from_line, relay_record
from eeveepy.logs.setup import (
    configure_logging,
    configure_operator_logging,
    configure_supervisor_logging,
)
from eeveepy.protocol.models import LogLevel, LogRecord

pytest.register_assert_rewrite("tests.logs_fixtures")  # imported here, before pytest_plugins

from tests.logs_fixtures import WAIT, rec  # noqa: E402

pytest_plugins = ["tests.logs_fixtures"]


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


def test_writer_writes_at_once_while_the_pipe_has_room(restore_structlog: None) -> None:
    # No thread while the supervisor keeps up: each line is in the pipe when the call returns.
    r, w = os.pipe()
    out = os.fdopen(w, "w", encoding="utf-8")
    threads = set(threading.enumerate())
    try:
        writer = configure_operator_logging("echo", json_lines=True, stream=out)
        assert writer is not None
        log = structlog.get_logger("test")
        for i in range(3):
            log.info("tick", i=i)
            line = json.loads(os.read(r, 65536))
            assert (line["event"], line["i"], line["operator"]) == ("tick", i, "echo")
        assert set(threading.enumerate()) == threads
        writer.close(WAIT)
        log.info("after close")
        assert writer.dropped == 1
    finally:
        out.close()
        os.close(r)


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


def test_cli_logging_is_console_text_of_warnings_and_worse(restore_structlog: None) -> None:
    out = io.StringIO()
    assert configure_logging(level="warning", stream=out) is None
    log = structlog.get_logger("eeveepy.cli")
    log.info("hidden")
    log.warning("careful", k=1)
    try:
        raise KeyError("gone")
    except KeyError:
        log.exception("failed")
    text = out.getvalue()
    assert "hidden" not in text
    assert "careful" in text
    assert "k=1" in text
    assert "operator" not in text
    assert "KeyError" in text
    assert not text.lstrip().startswith("{")
