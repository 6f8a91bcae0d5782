"""Shared by the tests of :mod:`eeveepy.logs`: records, a collector of published log
envelopes, a connection to the session's nats-server, and structlog put back after a test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import pytest
import pytest_asyncio
import structlog
from nats.aio.client import Client as NatsClient

from eeveepy.bus.client import BusConfig, barrier, connect
from eeveepy.bus.ipc import Ipc
from eeveepy.logs.writer import StderrJsonWriter
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
