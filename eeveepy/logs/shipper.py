"""Shipping log records to the bus: a bounded queue in front of the publisher.

Whoever logs must never wait for the bus: :meth:`LogShipper.submit` only queues, and a task
publishes each record on ``{p}.log.{level}.{operator}``, where the JetStream stream of
:mod:`eeveepy.logs.stream` keeps it. The supervisor ships its own events (through
:func:`~eeveepy.logs.setup.configure_supervisor_logging`) and every line its operators write
(:func:`~eeveepy.logs.records.record_from_line`) through one shipper.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque

from eeveepy.bus.ipc import Ipc
from eeveepy.errors import EnvelopeError, PayloadTooLargeError, SubjectError
from eeveepy.protocol.models import LogLevel, LogRecord, utcnow

__all__ = ["LogShipper"]


def _is_permanent(exc: Exception) -> bool:
    """A publish failure that retrying the same record cannot fix."""
    return isinstance(
        exc, SubjectError | PayloadTooLargeError | EnvelopeError | ValueError | TypeError
    )


class LogShipper:
    """Publishes log records on the bus from a bounded queue, in order, without blocking.

    :meth:`submit` is synchronous and never blocks or raises (it may be called from any
    thread): the record goes into a queue of ``capacity`` records; when the queue is full the
    oldest record is dropped and counted. The task (:meth:`start`, or await :meth:`run`)
    publishes records in order on ``{p}.log.{level}.{operator}``. When publishing fails (no
    connection yet, connection closed...) the record is kept and retried with a backoff of at
    most ``max_backoff`` seconds; a record that can never be published (invalid operator id,
    over the server's max_payload) is counted in :attr:`failed` and skipped. Once the queue is
    back to half its capacity after drops, one warning record ``"log events dropped"`` with
    ``fields={"dropped": n}`` is published under the shipper's own source.

    The shipper never logs: publishing a record cannot produce more records.
    """

    def __init__(self, ipc: Ipc, *, capacity: int = 10000, max_backoff: float = 1.0) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.ipc = ipc
        self.capacity = capacity
        self.max_backoff = max_backoff
        self._queue: deque[LogRecord] = deque(maxlen=capacity)
        self._current: LogRecord | None = None
        self._dropped = 0
        self._reported = 0
        self._failed = 0
        self._published = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def source(self) -> str:
        """The operator id of the shipper's own records (the ipc's source)."""
        return self.ipc.source

    @property
    def dropped(self) -> int:
        """Records dropped because the queue was full, since creation."""
        return self._dropped

    @property
    def failed(self) -> int:
        """Records skipped because they could never be published."""
        return self._failed

    @property
    def published(self) -> int:
        """Records published, drop warnings included."""
        return self._published

    @property
    def pending(self) -> int:
        """Records not published yet (queued or being retried)."""
        return len(self._queue) + (self._current is not None)

    def submit(self, record: LogRecord) -> None:
        """Queue ``record`` for publishing; drops the oldest queued record when full."""
        try:
            q = self._queue
            if len(q) >= self.capacity:
                self._dropped += 1  # the append below pushes the oldest out
            q.append(record)
            loop = self._loop
            if loop is None:
                return
            if threading.get_ident() == self._loop_thread:
                self._wake.set()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(self._wake.set)
        except Exception:  # never let logging break the caller
            pass

    def start(self) -> asyncio.Task[None]:
        """Start :meth:`run` as a task of the running loop (once); returns the task."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="log-shipper")
        return self._task

    async def run(self) -> None:
        """Publish queued records until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        current = asyncio.current_task()
        if self._task is None and current is not None:
            self._task = current
        backoff = 0.0
        burst = 0
        while True:
            record = self._current
            if record is None:
                record = self._next()
                if record is None:
                    self._idle.set()
                    self._wake.clear()
                    if self._queue or self._dropped > self._reported:
                        continue
                    await self._wake.wait()
                    continue
                self._idle.clear()
                self._current = record
            try:
                await self.ipc.publish(
                    self.ipc.subjects.log(record.operator, record.level.value), record
                )
            except Exception as exc:
                if _is_permanent(exc):
                    self._failed += 1
                    self._current = None
                    continue
                backoff = min(self.max_backoff, max(0.05, backoff * 2))
                await asyncio.sleep(backoff)
                continue
            self._current = None
            self._published += 1
            backoff = 0.0
            burst += 1
            if burst % 64 == 0:  # publish rarely suspends: let the loop (and the flusher) run
                await asyncio.sleep(0)

    def _next(self) -> LogRecord | None:
        """The next record to publish: a drop warning once caught up, else the oldest."""
        unreported = self._dropped - self._reported
        if unreported > 0 and len(self._queue) <= self.capacity // 2:
            self._reported += unreported
            return LogRecord(
                operator=self.source,
                level=LogLevel.WARNING,
                event="log events dropped",
                time=utcnow(),
                fields={"dropped": unreported},
            )
        if self._queue:
            return self._queue.popleft()
        return None

    async def stop(self, timeout: float = 2.0) -> None:
        """Publish what is queued (for at most ``timeout`` seconds), flush, and stop the task."""
        task = self._task
        if task is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not task.done():
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while self.pending or self._dropped > self._reported:
                        self._idle.clear()
                        await self._idle.wait()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None
        if self.ipc.connected:
            remaining = max(0.05, deadline - loop.time())
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ipc.nc.flush(), remaining)
