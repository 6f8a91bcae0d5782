"""Where rendered log lines go: a console that never raises, a pipe writer that never blocks.

structlog hands each rendered line to a logger made by a logger factory. On a console (the
supervisor, an operator run by hand, the CLI) that is :class:`ConsoleLoggerFactory` over a
:class:`SafeStream`. An operator under a supervisor writes into the pipe the supervisor reads,
which can be slow or stuck: :class:`StderrJsonWriter` queues the line and a thread writes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sys
import threading
from typing import Any, TextIO

import structlog

from eeveepy.protocol.codec import format_timestamp
from eeveepy.protocol.models import utcnow

__all__ = ["ConsoleLoggerFactory", "SafeStream", "StderrJsonWriter"]


class SafeStream:
    """A text stream for console logs that never raises: a closed terminal or pipe (EIO,
    EPIPE) silences the console instead of failing the caller, whose events still reach the
    bus. The supervisor must outlive the terminal it was started from."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        """Write ``text`` unless the stream has failed before; never raises."""
        if not self.broken:
            try:
                self._stream.write(text)
            except (OSError, ValueError):
                self.broken = True
        return len(text)

    def flush(self) -> None:
        """Flush unless the stream has failed before; never raises."""
        if not self.broken:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self.broken = True

    def isatty(self) -> bool:
        """Whether the stream is a terminal (False when it cannot tell)."""
        try:
            return self._stream.isatty()
        except (OSError, ValueError, AttributeError):
            return False


class _NamedPrintLogger(structlog.PrintLogger):
    """structlog's PrintLogger that remembers the name it was asked for."""

    def __init__(self, file: TextIO, name: str | None) -> None:
        super().__init__(file)
        self.name = name


class ConsoleLoggerFactory:
    """A structlog logger factory printing to one file; each logger keeps its ``name``."""

    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> structlog.PrintLogger:
        """The logger factory: ``structlog.get_logger(name)`` ends here."""
        name = args[0] if args and isinstance(args[0], str) else None
        return _NamedPrintLogger(self._file, name)


class _QueueLogger:
    """What structlog calls with the rendered line: hands it to a :class:`StderrJsonWriter`."""

    __slots__ = ("_writer", "name")

    def __init__(self, writer: StderrJsonWriter, name: str | None) -> None:
        self._writer = writer
        self.name = name

    def msg(self, message: str) -> None:
        """Queue one rendered line."""
        self._writer.write(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class StderrJsonWriter:
    """A structlog logger factory whose loggers never block: a thread does the writing.

    Rendering happens in the caller (the processor chain); the rendered line goes into a
    bounded :class:`queue.Queue` (``capacity`` lines) and a daemon thread writes it to
    ``stream`` (``sys.stderr`` by default). When the queue is full the line is dropped and
    counted; once the thread has caught up (the queue at half its capacity or less) it writes
    one JSON warning event ``"log lines dropped"`` with ``"dropped": n``. So a log call costs
    the rendering and a queue put, even when whoever reads the stream is slow or stuck.

    The thread starts on the first write (and again in a forked child).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        capacity: int = 10000,
        operator: str | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._stream = stream if stream is not None else sys.stderr
        self.capacity = capacity
        self.operator = operator
        self._lock = threading.Lock()
        self._queue: queue.Queue[str | None] = queue.Queue(capacity)
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._dropped = 0
        self._reported = 0
        self._errors = 0
        self._closed = False

    def __call__(self, *args: Any) -> _QueueLogger:
        """The logger factory: ``structlog.get_logger(name)`` ends here."""
        name = args[0] if args and isinstance(args[0], str) else None
        return _QueueLogger(self, name)

    @property
    def dropped(self) -> int:
        """Lines dropped because the queue was full (or the writer closed)."""
        return self._dropped

    @property
    def errors(self) -> int:
        """Writes to the stream that failed (closed stream, broken pipe)."""
        return self._errors

    @property
    def pending(self) -> int:
        """Lines queued and not written yet."""
        return self._queue.qsize()

    def write(self, line: str) -> None:
        """Queue one line (without its newline); never blocks."""
        if self._closed:
            self._count_drop()
            return
        if self._thread is None or self._pid != os.getpid():
            self._start_thread()
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self._count_drop()

    def _count_drop(self) -> None:
        with self._lock:
            self._dropped += 1

    def _start_thread(self) -> None:
        pid = os.getpid()
        if self._pid != pid:  # forked: the parent's thread, lock and queue are not ours
            self._pid = pid
            self._lock = threading.Lock()
            self._queue = queue.Queue(self.capacity)
            self._thread = None
        with self._lock:
            if self._thread is not None:
                return
            thread = threading.Thread(
                target=self._run, args=(self._queue,), name="eevee-log-writer", daemon=True
            )
            self._thread = thread
        thread.start()

    def _run(self, q: queue.Queue[str | None]) -> None:
        while True:
            batch = [q.get()]
            while len(batch) < 512:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            try:
                lines = [line for line in batch if line is not None]
                if lines:
                    self._emit("\n".join(lines) + "\n")
                if self._dropped > self._reported and q.qsize() <= self.capacity // 2:
                    self._report()
            finally:
                for _ in batch:
                    q.task_done()
            if None in batch:
                return

    def _report(self) -> None:
        with self._lock:
            count = self._dropped - self._reported
            self._reported = self._dropped
        event: dict[str, Any] = {
            "event": "log lines dropped",
            "level": "warning",
            "timestamp": format_timestamp(utcnow()),
            "logger": "eeveepy.logs",
        }
        if self.operator:
            event["operator"] = self.operator
        event["dropped"] = count
        self._emit(json.dumps(event) + "\n")

    def _emit(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except Exception:
            with self._lock:
                self._errors += 1

    def flush(self, timeout: float = 1.0) -> bool:
        """Wait (at most ``timeout`` seconds) until every queued line is written."""
        q = self._queue
        with q.all_tasks_done:
            return q.all_tasks_done.wait_for(lambda: q.unfinished_tasks == 0, timeout)

    def close(self, timeout: float = 1.0) -> None:
        """Write what is queued (bounded) and stop the thread; later lines are dropped."""
        self.flush(timeout)
        self._closed = True
        if self._thread is not None and self._pid == os.getpid():
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
