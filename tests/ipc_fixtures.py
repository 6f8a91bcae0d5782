"""The ipc tests' harness: Ipc instances on the session's nats-server, under a prefix per test,
and helpers to wait for what they receive (used by ``tests/test_ipc*.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sized
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio
from nats.aio.client import Client as NatsClient

from eeveepy.bus.client import BusConfig, barrier, connect
from eeveepy.bus.ipc import Ipc
from eeveepy.protocol.models import ChatMessage, ChatUser, LogLevel, LogRecord
from eeveepy.protocol.subjects import Subjects

WAIT = 5.0
SOURCE = "test.x"


def chat(
    text: str, room: str = "#room", platform: str = "irc", network: str = "libera"
) -> ChatMessage:
    """A chat message (receivers refuse one whose platform or network is not its subject's)."""
    return ChatMessage(
        platform=platform,
        network=network,
        room=room,
        user=ChatUser(id="alice", name="Alice"),
        text=text,
    )


def log_record(n: int) -> LogRecord:
    return LogRecord(operator="test", level=LogLevel.INFO, event=str(n))


class RecordingLogger:
    """Stands in for the structlog logger an Ipc writes to."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def _record(self, level: str, event: str, kw: dict[str, Any]) -> None:
        self.records.append((level, event, kw))

    def debug(self, event: str, **kw: Any) -> None:
        self._record("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._record("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._record("warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._record("error", event, kw)

    def exception(self, event: str, **kw: Any) -> None:
        self._record("exception", event, kw)

    def named(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        """``(level, fields)`` of every record of the event ``name``."""
        return [(level, kw) for level, event, kw in self.records if event == name]

    def problems(self) -> list[str]:
        """Events logged at warning level or above."""
        return [e for lvl, e, _ in self.records if lvl in ("warning", "error", "exception")]


@dataclass
class Bus:
    """Connections and Ipc instances of one test, under a prefix of its own."""

    url: str
    prefix: str = field(default_factory=lambda: "t" + uuid.uuid4().hex)
    conns: list[NatsClient] = field(default_factory=list)
    ipcs: list[Ipc] = field(default_factory=list)

    @property
    def subjects(self) -> Subjects:
        return Subjects(prefix=self.prefix)

    async def connect(self, name: str = "test") -> NatsClient:
        nc = await connect(BusConfig(url=self.url), name=name)
        self.conns.append(nc)
        return nc

    async def attach(self, ipc: Ipc) -> Ipc:
        self.ipcs.append(ipc)
        await ipc.attach(await self.connect(ipc.source))
        return ipc

    async def ipc(self, source: str = SOURCE, **kwargs: Any) -> Ipc:
        return await self.attach(Ipc(self.subjects, source=source, **kwargs))

    async def close(self) -> None:
        for ipc in self.ipcs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ipc.detach(), WAIT)
        for nc in self.conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), WAIT)


@pytest_asyncio.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = Bus(nats_url)
    try:
        yield b
    finally:
        await b.close()


async def ready(*ipcs: Ipc) -> None:
    """The server has every subscription of ``ipcs`` before anyone publishes."""
    for ipc in ipcs:
        await asyncio.wait_for(barrier(ipc.nc), WAIT)


async def settle(*ipcs: Ipc) -> None:
    """Everything published so far on ``ipcs`` has reached its subscribers' handlers."""
    for ipc in ipcs:
        await asyncio.wait_for(barrier(ipc.nc), WAIT)
    await asyncio.sleep(0.05)


async def until(predicate: Callable[[], bool], what: str = "condition") -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT} s waiting for {what}")
        await asyncio.sleep(0.005)


async def count(items: Sized, n: int) -> None:
    await until(lambda: len(items) >= n, f"{n} items (have {len(items)})")
