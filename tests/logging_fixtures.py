"""The logging operator as a real process against the session's nats-server: fixtures.

Each test has a subject prefix of its own and plays the supervisor's part: it creates the
``<PREFIX>_LOGS`` stream (except where the fallback is tested), publishes log envelopes with
the source ``supervisor`` and answers ``{p}.supervisor.status`` with the operator ids of
:attr:`Bus.operators` (the ids the logging operator gives files of their own).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest_asyncio
from nats.js.api import ConsumerInfo
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from eeveepy.bus.client import barrier
from eeveepy.logs.stream import stream_name
from eeveepy.protocol.models import (
    Body,
    Envelope,
    LogLevel,
    LogRecord,
    OperatorStatus,
    Ready,
    SupervisorStatus,
)
from operators.logging import DURABLE
from tests.bus_fixtures import PrefixedBus
from tests.operator_procs import contract_env

WAIT = 5.0
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Bus(PrefixedBus):
    """The test's connection, publishing as the supervisor under a prefix of its own."""

    SOURCE = "supervisor"

    stream: bool = False
    operators: set[str] = field(
        default_factory=lambda: {"echo", "irc.libera", "rot", "worker", "probe", "held"}
    )
    """The ids this test's supervisor lists on ``supervisor.status`` (empty: no answer)."""
    asks: int = 0
    """``supervisor.status`` requests received."""

    @property
    def js(self) -> JetStreamContext:
        return self.io.nc.jetstream()

    @property
    def stream_name(self) -> str:
        return stream_name(self.prefix)

    async def start(self) -> None:
        await super().start()

        async def on_status(env: Envelope[dict[str, Any]]) -> SupervisorStatus | None:
            self.asks += 1
            return self.status() if self.operators else None

        await self.io.subscribe(self.subjects.supervisor("status"), on_status)
        await barrier(self.io.nc)

    def status(self, name: str = "test", operators: set[str] | None = None) -> SupervisorStatus:
        """A supervisor's answer listing ``operators`` (default :attr:`operators`)."""
        listed = sorted(self.operators if operators is None else operators)
        return SupervisorStatus(
            supervisor=name,
            pid=os.getpid(),
            started=datetime.now(UTC),
            operators=[OperatorStatus(id=i, state="RUNNING") for i in listed],
        )

    async def add_stream(self) -> None:
        """What the supervisor does at start."""
        await self.js.add_stream(name=self.stream_name, subjects=[f"{self.prefix}.log.>"])
        self.stream = True

    async def close(self) -> None:
        if self.stream and self.ipc is not None and self.ipc.connected:
            with contextlib.suppress(Exception):
                await self.js.delete_stream(self.stream_name)
        await super().close()

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


async def until(check: Callable[[], bool], child: Child, what: str, timeout: float = WAIT) -> None:
    """Poll ``check`` (bounded) until it holds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; stderr: {child.stderr.decode()}")
        await asyncio.sleep(0.05)


async def caught_up(bus: Bus, count: int, timeout: float = WAIT) -> None:
    """Wait until the durable consumer has had ``count`` messages and acknowledged them all."""
    deadline = time.monotonic() + timeout
    info: ConsumerInfo | None = None
    while True:
        with contextlib.suppress(NotFoundError):  # the operator may not have bound it yet
            info = await bus.js.consumer_info(bus.stream_name, DURABLE)
            if info.delivered.stream_seq >= count and not info.num_ack_pending:
                return
        assert time.monotonic() < deadline, info
        await asyncio.sleep(0.05)
