"""The logging operator as a real process against the session's nats-server.

Each test has a subject prefix of its own and plays the supervisor's part (see
``tests/logging_fixtures.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
from nats.js.api import AckPolicy

from eeveepy.protocol.models import Control, ControlAction, ControlResult, LogLevel, LogRecord, Ping

pytest.register_assert_rewrite("tests.logging_fixtures")  # imported here, before pytest_plugins

from operators.logging import DURABLE, INVALID_NAME  # noqa: E402
from tests.logging_fixtures import (  # noqa: E402
    WAIT,
    Bus,
    Child,
    env_id,
    ids,
    lines,
    logging_process,
    until,
)

pytest_plugins = ["tests.logging_fixtures"]


async def test_writes_a_file_per_operator_and_files_invalid_events(bus: Bus) -> None:
    await bus.add_stream()
    logs = bus.tmp / "logs"
    async with logging_process(bus, bus.env({"directory": str(logs)})) as child:
        echo = [await bus.log("echo", "started")]
        echo.append(await bus.log("echo", "slow", level=LogLevel.WARNING))
        libera = await bus.log("irc.libera", "connected")
        sup = await bus.log("supervisor", "up")
        hostile = await bus.log("echo", "pwned", operator="../../etc/passwd")
        await bus.io.publish_raw(bus.subjects.log("echo", "error"), b"{not json")
        ping = await bus.publish("echo", Ping())  # a valid envelope of the wrong kind
        record = LogRecord(operator="echo", level=LogLevel.INFO, event="pretty")
        pretty = json.dumps(json.loads(bus.io.encode(record)[1]), indent=2).encode()
        await bus.io.publish_raw(bus.subjects.log("echo", "info"), pretty)
        echo.append(await bus.log("echo", "after the bad ones"))

        await until(lambda: len(lines(logs / "echo.jsonl")) == 4, child, "echo.jsonl")
        await until(lambda: len(lines(logs / f"{INVALID_NAME}.jsonl")) == 3, child, "_invalid")

        # Each line is the envelope as received; a multi-line one is put on one line.
        got = lines(logs / "echo.jsonl")
        assert got[:2] == echo[:2]
        assert json.loads(got[2]) == json.loads(pretty)
        assert got[3] == echo[2]
        assert lines(logs / "irc.libera.jsonl") == [libera]
        assert lines(logs / "supervisor.jsonl") == [sup]

        invalid = [json.loads(line) for line in lines(logs / f"{INVALID_NAME}.jsonl")]
        assert [env["kind"] for env in invalid] == ["dlq"] * 3
        assert all(env["source"] == "logging" for env in invalid)
        hostile_letter, junk, wrong_kind = (env["body"] for env in invalid)
        assert hostile_letter["payload"].encode() == hostile
        assert "operator id" in hostile_letter["reason"]
        assert junk["payload"] == "{not json"
        assert junk["subject"] == bus.subjects.log("echo", "error")
        assert wrong_kind["payload"].encode() == ping
        assert "kind" in wrong_kind["reason"]

        names = sorted(p.name for p in logs.iterdir())
        assert names == ["_invalid.jsonl", "echo.jsonl", "irc.libera.jsonl", "supervisor.jsonl"]
        assert not (bus.tmp / "etc").exists()

        # Every message was acknowledged, the malformed ones too.
        info = await bus.js.consumer_info(bus.stream_name, DURABLE)
        assert info.config.ack_policy == AckPolicy.EXPLICIT
        deadline = time.monotonic() + WAIT
        while info.num_ack_pending or info.num_pending:
            assert time.monotonic() < deadline, info
            await asyncio.sleep(0.05)
            info = await bus.js.consumer_info(bus.stream_name, DURABLE)
        assert info.delivered.stream_seq == 9

        assert await child.stop() == 0
    assert b"Traceback" not in child.stderr


async def test_rotates_keeps_backups_and_prunes_old_files(bus: Bus) -> None:
    await bus.add_stream()
    logs = bus.tmp / "logs"
    logs.mkdir()
    month_ago = time.time() - 30 * 86400
    for name in ("old.jsonl.1", "Not-An-Id.jsonl.1", "notes.txt", "rot.jsonl.5", "fresh.jsonl.1"):
        (logs / name).write_text("{}\n")
    for name in ("old.jsonl.1", "Not-An-Id.jsonl.1", "notes.txt"):
        os.utime(logs / name, (month_ago, month_ago))
    settings = {"directory": "logs-link", "max_bytes": 2000, "backups": 2, "max_age_days": 7}
    data_dir = bus.tmp / "data" / "logging"
    data_dir.mkdir(parents=True)
    (data_dir / "logs-link").symlink_to(logs)  # a relative directory is under the data dir

    async with logging_process(bus, bus.env(settings)) as child:
        sent = [env_id(await bus.log("rot", f"event {i:03d} " + "x" * 150)) for i in range(40)]
        await until(lambda: sent[-1] in ids(logs / "rot.jsonl"), child, "the last event")

        kept = ids(logs / "rot.jsonl.2") + ids(logs / "rot.jsonl.1") + ids(logs / "rot.jsonl")
        assert kept == sent[-len(kept) :]  # the newest, in order, nothing missing between
        assert len(kept) < len(sent)  # older ones were deleted with the oldest files
        for name in ("rot.jsonl", "rot.jsonl.1", "rot.jsonl.2"):
            assert 0 < (logs / name).stat().st_size <= 2000
        assert not (logs / "rot.jsonl.3").exists()
        assert sorted(p.name for p in logs.iterdir()) == [
            "Not-An-Id.jsonl.1",  # not an operator's file: left alone
            "fresh.jsonl.1",
            "notes.txt",
            "rot.jsonl",
            "rot.jsonl.1",
            "rot.jsonl.2",
        ]
        assert await child.stop() == 0


async def test_events_published_while_down_are_written_once_after_restart(bus: Bus) -> None:
    await bus.add_stream()
    logs = bus.tmp / "logs"
    env = bus.env({"directory": str(logs)})
    path = logs / "worker.jsonl"

    async with logging_process(bus, env) as child:
        before = [env_id(await bus.log("worker", f"before {i}")) for i in range(3)]
        await until(lambda: ids(path) == before, child, "the first events")
        assert await child.stop() == 0

    during = [env_id(await bus.log("worker", f"during {i}")) for i in range(5)]
    deadline = time.monotonic() + WAIT
    while (await bus.js.stream_info(bus.stream_name)).state.messages < 8:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert ids(path) == before  # nobody is writing

    async with logging_process(bus, env) as child:
        after = [env_id(await bus.log("worker", f"after {i}")) for i in range(2)]
        expected = before + during + after
        await until(lambda: set(expected) <= set(ids(path)), child, "every event")
        await asyncio.sleep(0.3)  # room for a duplicate to show up
        assert ids(path) == expected  # each exactly once, in order
        assert await child.stop() == 0


async def test_without_stream_falls_back_and_reload_reopens_elsewhere(bus: Bus) -> None:
    first, second = bus.tmp / "first", bus.tmp / "second"
    settings_file = bus.tmp / "logging.json"
    settings_file.write_text(json.dumps({"directory": str(first), "stream_wait": 0.2}))
    env = bus.env({}, EEVEE_SETTINGS_FILE=str(settings_file))

    async def probe(directory: Path, child: Child) -> None:
        """Publish until an event shows up in ``directory`` (the subscription is not
        announced, and a plain subscription keeps nothing from before it began)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            sent = env_id(await bus.log("probe", "hello"))
            for _ in range(10):
                if sent in ids(directory / "probe.jsonl"):
                    return
                await asyncio.sleep(0.02)
        raise AssertionError(f"nothing written; stderr: {child.stderr.decode()}")

    async with logging_process(bus, env) as child:
        await probe(first, child)
        assert b"no log stream" in child.stderr

        settings_file.write_text(json.dumps({"directory": str(second), "stream_wait": 0.2}))
        child.proc.send_signal(signal.SIGHUP)
        await probe(second, child)
        count = len(lines(first / "probe.jsonl"))
        await bus.log("probe", "only in second")
        await until(lambda: len(lines(second / "probe.jsonl")) >= 2, child, "second file")
        assert len(lines(first / "probe.jsonl")) == count
        assert await child.stop() == 0


async def test_halt_holds_events_until_resume(bus: Bus) -> None:
    await bus.add_stream()
    logs = bus.tmp / "logs"
    path = logs / "held.jsonl"
    ctl = bus.subjects.operator_ctl("logging")
    async with logging_process(bus, bus.env({"directory": str(logs)})) as child:
        first = env_id(await bus.log("held", "before"))
        await until(lambda: ids(path) == [first], child, "the first event")

        halted = await bus.io.request(ctl, Control(action=ControlAction.HALT), ControlResult)
        assert halted.body.ok
        held = [env_id(await bus.log("held", f"held {i}")) for i in range(3)]
        await asyncio.sleep(1.5)  # longer than a fetch: one in progress at the halt ends
        assert ids(path) == [first]

        resumed = await bus.io.request(ctl, Control(action=ControlAction.RESUME), ControlResult)
        assert resumed.body.ok
        await until(lambda: sorted(ids(path)) == sorted([first, *held]), child, "held events")
        assert await child.stop() == 0
