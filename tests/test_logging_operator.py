"""The logging operator as a real process against the session's nats-server.

Each test has a subject prefix of its own and plays the supervisor's part: it creates the
``<PREFIX>_LOGS`` stream (except where the fallback is tested) and publishes log envelopes
with the source ``supervisor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest_asyncio
from nats.js.api import AckPolicy
from nats.js.client import JetStreamContext

from eeveepy.bus import BusConfig, barrier, connect
from eeveepy.ipc import Ipc
from eeveepy.models import (
    Body,
    Control,
    ControlAction,
    ControlResult,
    LogLevel,
    LogRecord,
    Ping,
    Ready,
)
from eeveepy.subjects import Subjects
from operators.logging import DURABLE, INVALID_NAME, log_stream_name
from tests.operator_procs import contract_env

WAIT = 5.0
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Bus:
    """The test's connection, publishing as the supervisor under a prefix of its own."""

    url: str
    tmp: Path
    prefix: str = field(default_factory=lambda: "lg" + uuid.uuid4().hex[:12])
    ipc: Ipc | None = None
    stream: bool = False

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.prefix)

    @property
    def io(self) -> Ipc:
        assert self.ipc is not None
        return self.ipc

    @property
    def js(self) -> JetStreamContext:
        return self.io.nc.jetstream()

    @property
    def stream_name(self) -> str:
        return log_stream_name(self.prefix)

    async def start(self) -> None:
        self.ipc = Ipc(self.subjects, "supervisor")
        await self.ipc.attach(await connect(BusConfig(url=self.url), name="test"))

    async def add_stream(self) -> None:
        """What the supervisor does at start."""
        await self.js.add_stream(name=self.stream_name, subjects=[f"{self.prefix}.log.>"])
        self.stream = True

    async def close(self) -> None:
        if self.ipc is not None and self.ipc.connected:
            nc = self.ipc.nc
            if self.stream:
                with contextlib.suppress(Exception):
                    await self.js.delete_stream(self.stream_name)
            await self.ipc.detach()
            await nc.close()

    def env(self, settings: dict[str, Any], op_id: str = "logging", **extra: str) -> dict[str, str]:
        """The process contract's environment."""
        return contract_env(
            url=self.url, prefix=self.prefix, op_id=op_id, tmp=self.tmp, settings=settings, **extra
        )

    async def publish(self, subject_op: str, body: Body, level: str = "info") -> bytes:
        """Publish ``body`` on ``log.<level>.<subject_op>``; return the payload as sent."""
        _, payload = self.io.encode(body)
        await self.io.publish_raw(self.subjects.log(subject_op, level), payload)
        return payload

    async def log(
        self, op: str, event: str, *, operator: str | None = None, level: LogLevel = LogLevel.INFO
    ) -> bytes:
        record = LogRecord(operator=operator or op, level=level, event=event)
        return await self.publish(op, record, level.value)


@pytest_asyncio.fixture
async def bus(nats_url: str, tmp_path: Path) -> AsyncIterator[Bus]:
    b = Bus(nats_url, tmp_path)
    await b.start()
    try:
        yield b
    finally:
        await b.close()


class Child:
    """``python -m operators.logging`` with its stderr collected."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stderr = b""
        assert proc.stderr is not None
        self._reader = asyncio.ensure_future(self._read(proc.stderr))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.stderr += chunk

    async def stop(self) -> int:
        """SIGTERM and the exit code (a clean stop is 0)."""
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), WAIT)
        await asyncio.wait_for(self._reader, WAIT)
        return code


@contextlib.asynccontextmanager
async def logging_process(bus: Bus, env: dict[str, str]) -> AsyncIterator[Child]:
    """The logging operator started and Ready; killed at the end if still running."""
    ready: asyncio.Queue[Ready] = asyncio.Queue()

    async def on_ready(msg: Ready) -> None:
        await ready.put(msg)

    sub = await bus.io.subscribe(bus.subjects.operator_ready(env["EEVEE_OPERATOR_ID"]), on_ready)
    await barrier(bus.io.nc)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "operators.logging",
        env=env,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    child = Child(proc)
    try:
        try:
            msg = await asyncio.wait_for(ready.get(), WAIT)
        except TimeoutError:
            raise AssertionError(f"no Ready; stderr: {child.stderr.decode()}") from None
        assert msg.pid == proc.pid
        yield child
    finally:
        await sub.unsubscribe()
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        child._reader.cancel()


def lines(path: Path) -> list[bytes]:
    """The complete lines of ``path`` (a write may be under way as it is read)."""
    data = path.read_bytes() if path.exists() else b""
    return data[: data.rfind(b"\n") + 1].splitlines()


def ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in lines(path)]


def env_id(payload: bytes) -> str:
    value = json.loads(payload)["id"]
    assert isinstance(value, str)
    return value


async def until(check: Callable[[], bool], child: Child, what: str) -> None:
    """Poll ``check`` (bounded) until it holds."""
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; stderr: {child.stderr.decode()}")
        await asyncio.sleep(0.05)


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
