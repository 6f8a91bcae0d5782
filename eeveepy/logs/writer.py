"""Where rendered log lines go: a console that never raises, a pipe writer that never blocks.

structlog hands each rendered line to a logger made by a logger factory. On a console (the
supervisor, an operator run by hand, the CLI) that is :class:`ConsoleLoggerFactory` over a
:class:`SafeStream`. An operator under a supervisor writes into the pipe the supervisor reads,
which can be slow or stuck: :class:`StderrJsonWriter` writes the line at once when the pipe
takes it without waiting, else queues it and a thread writes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import stat
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

    def fileno(self) -> int:
        """The stream's file descriptor (raises as the stream's own ``fileno`` does)."""
        return self._stream.fileno()

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
    """A structlog logger factory whose loggers never block.

    Rendering happens in the caller (the processor chain). When ``stream`` (``sys.stderr`` by
    default) is a pipe and has room, the rendered line is written at once, without waiting
    (through a descriptor of its own opened non-blocking, so that other writers of the stream
    still wait as before). The first line the pipe cannot take goes into a bounded
    :class:`queue.Queue` (``capacity`` lines) and a daemon thread writes it, and every line
    after it too, in batches (a process that fills the pipe once may well do so again). When
    the queue is full the line is dropped and counted; once the thread has caught up (the
    queue at half its capacity or less) it writes one JSON warning event ``"log lines
    dropped"`` with ``"dropped": n``. So a log call costs the rendering and a write or a queue
    put, even when whoever reads the stream is slow or stuck.

    The thread starts on the first line queued (and again in a forked child): an operator
    whose supervisor keeps up with its lines never starts it (a thread's start is ≈2 % of a
    minimal forked operator's own memory).
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
        # Made with the thread (as a forked child's own is): most writers never need them.
        self._queue: queue.Queue[str | None] | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._dropped = 0
        self._reported = 0
        self._errors = 0
        self._closed = False
        self._fd: int | None = None  # the direct descriptor: None not opened yet, -1 none

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
        return 0 if self._queue is None else self._queue.qsize()

    def write(self, line: str) -> None:
        """Queue one line (without its newline); never blocks."""
        if self._closed:
            self._count_drop()
            return
        if self._pid != os.getpid():
            self._forked()
        if self._direct(line):
            return
        q = self._queue if self._queue is not None else self._start_thread()
        try:
            q.put_nowait(line)
        except queue.Full:
            self._count_drop()

    def _direct(self, line: str) -> bool:
        """Write ``line`` now if nothing is queued and the pipe takes it whole without
        waiting; False when it must be queued."""
        data = (line + "\n").encode("utf-8", "backslashreplace")
        if len(data) > select.PIPE_BUF:  # a longer write to a pipe may be cut short
            return False
        with self._lock:
            if self._fd is None:
                self._fd = self._open_direct()
            # Once the pipe was full, the thread writes everything (in batches: a flood of
            # lines costs the reader one wake-up per batch, not per line).
            if self._fd < 0 or self._closed or self._thread is not None:
                return False
            try:
                # Up to PIPE_BUF bytes: written whole, or not at all (no room: queued).
                os.write(self._fd, data)
            except BlockingIOError:
                return False
            except OSError:  # the reader is gone
                self._errors += 1
        return True

    def _open_direct(self) -> int:
        """A non-blocking descriptor of the stream's pipe, -1 if it is none. Opened anew
        (not duplicated), so that it is non-blocking alone."""
        try:
            fd = self._stream.fileno()
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                return -1
            return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, ValueError, AttributeError):  # no descriptor, or no /proc
            return -1

    def _count_drop(self) -> None:
        with self._lock:
            self._dropped += 1

    def _forked(self) -> None:
        """In a forked child: the parent's thread, lock, queue and descriptor are not ours."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._queue = None
        self._thread = None
        if self._fd is not None and self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None

    def _start_thread(self) -> queue.Queue[str | None]:
        """The queue the thread writes from, both started at the first call."""
        with self._lock:
            if self._queue is not None:
                return self._queue
            q: queue.Queue[str | None] = queue.Queue(self.capacity)
            thread = threading.Thread(
                target=self._run, args=(q,), name="eevee-log-writer", daemon=True
            )
            self._queue, self._thread = q, thread
        thread.start()
        return q

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
        if q is None:
            return True
        with q.all_tasks_done:
            return q.all_tasks_done.wait_for(lambda: q.unfinished_tasks == 0, timeout)

    def close(self, timeout: float = 1.0) -> None:
        """Write what is queued (bounded) and stop the thread; later lines are dropped."""
        self.flush(timeout)
        with self._lock:
            self._closed = True
            if self._fd is not None and self._fd >= 0 and self._pid == os.getpid():
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = -1
        if self._queue is not None and self._pid == os.getpid():
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
