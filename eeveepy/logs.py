"""Logs as bus traffic: capture, shipping, retention and reading.

The path of one log event::

    operator (structlog, JSON line on stderr, written by a thread: never blocks the loop)
      -> supervisor reads the pipe, :func:`record_from_line` makes a :class:`LogRecord`
      -> :class:`LogShipper` publishes it on ``{p}.log.{level}.{operator_id}``
      -> the JetStream stream ``<PREFIX>_LOGS`` keeps recent history (:func:`ensure_log_stream`)
      -> ``eevee logs`` reads it back (:func:`read_logs`, :class:`LogFilter`, :func:`render`).

The supervisor's own events take the same road through :func:`configure_supervisor_logging`,
published on ``{p}.log.{level}.supervisor``.

Every buffer on the way is bounded and drops the oldest (shipper) or newest (stderr writer)
entries when full; what was dropped is counted and reported as one warning event once the
buffer has caught up. Nothing on the way blocks the caller of a log method.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fnmatch
import json
import logging
import os
import queue
import re
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from enum import Enum
from types import MappingProxyType
from typing import Any, Final, Literal, TextIO

import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import (
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from eeveepy.bus.ipc import Ipc
from eeveepy.bus.names import log_stream_name as stream_name
from eeveepy.errors import BusError, EeveeError, EnvelopeError, PayloadTooLargeError, SubjectError
from eeveepy.protocol.codec import EnvelopeDecoder, format_timestamp
from eeveepy.protocol.models import Envelope, LogLevel, LogRecord, utcnow
from eeveepy.protocol.subjects import validate_operator_id

__all__ = [
    "MAX_LINE_BYTES",
    "SUPERVISOR_SOURCE",
    "BoundedJSONRenderer",
    "LogFilter",
    "LogQueryError",
    "LogReadStats",
    "LogShipper",
    "StderrJsonWriter",
    "configure_operator_logging",
    "configure_supervisor_logging",
    "ensure_log_stream",
    "level_from_name",
    "parse_since",
    "read_logs",
    "record_from_line",
    "relay_record",
    "render",
    "stream_name",
]

MAX_LINE_BYTES: Final = 16 * 1024
"""Captured plain-text lines (and event texts) are cut to this many UTF-8 bytes."""

SUPERVISOR_SOURCE: Final = "supervisor"
"""The operator id under which the supervisor's own events are published."""

RELAYED_KEY: Final = "_relayed"
"""Marks an event the supervisor relays from an operator: shown, never shipped again."""

_LEVELS: Final = MappingProxyType(
    {
        "debug": LogLevel.DEBUG,
        "info": LogLevel.INFO,
        "warning": LogLevel.WARNING,
        "warn": LogLevel.WARNING,
        "error": LogLevel.ERROR,
        "exception": LogLevel.ERROR,
        "critical": LogLevel.CRITICAL,
        "fatal": LogLevel.CRITICAL,
    }
)
_LEVEL_ORDER: Final = MappingProxyType({level: i for i, level in enumerate(LogLevel)})

# Control characters (C0 but tab, DEL, C1) and lone surrogates: removed from captured text.
_STRIP_RE: Final = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")
# Everything a terminal could act on: escaped when rendering.
_ESCAPE_RE: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_ESCAPES: Final = MappingProxyType({"\n": "\\n", "\r": "\\r", "\t": "\\t"})
_BARE_VALUE_RE: Final = re.compile(r"[^\s=\"']+")
_SINCE_RE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_SINCE_UNITS: Final = MappingProxyType(
    {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
)
_MAX_JSON_DEPTH: Final = 32
_GLOB_CHARS: Final = frozenset("*?[")

_COLORS: Final = MappingProxyType(
    {
        LogLevel.DEBUG: "\033[2m",
        LogLevel.INFO: "\033[32m",
        LogLevel.WARNING: "\033[33m",
        LogLevel.ERROR: "\033[31m",
        LogLevel.CRITICAL: "\033[1;31m",
    }
)
_DIM: Final = "\033[2m"
_RESET: Final = "\033[0m"


class LogQueryError(EeveeError):
    """A log query or logging setup that cannot be done: a bad ``--since``, an unknown level."""


# ---------------------------------------------------------------------------------------------
# Lines -> records


def level_from_name(name: object) -> LogLevel:
    """The :class:`LogLevel` of a level name; aliases (warn, exception, fatal) map, else info."""
    if isinstance(name, str):
        return _LEVELS.get(name.strip().lower(), LogLevel.INFO)
    return LogLevel.INFO


def _cut(text: str, limit: int = MAX_LINE_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    if len(text) * 4 <= limit:
        return text
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


def _valid_str(text: str) -> str:
    """``text`` with lone surrogates (which cannot be encoded as UTF-8) replaced."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _clean_json(value: Any, depth: int = 0) -> Any:
    """A value parsed by ``json.loads`` made safe to serialize again (UTF-8, bounded depth)."""
    if isinstance(value, str):
        return _valid_str(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= _MAX_JSON_DEPTH:
        try:
            return json.dumps(value)  # ASCII, escapes included: always encodable
        except (ValueError, TypeError, RecursionError):
            return "<nested too deep>"
    if isinstance(value, list):
        return [_clean_json(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {_valid_str(str(k)): _clean_json(v, depth + 1) for k, v in value.items()}
    return _valid_str(repr(value))


def _parse_time(value: object) -> datetime | None:
    """An aware datetime from an ISO 8601 string, else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None or when.utcoffset() is None:
        return None
    return when


def record_from_line(operator_id: str, line: str, stream: Literal["stdout", "stderr"]) -> LogRecord:
    """Turn one line an operator wrote into a :class:`LogRecord`; never raises.

    A JSON object with a string ``"event"`` (what :func:`configure_operator_logging` writes)
    keeps its level (``level``, aliases mapped, unknown -> info), its time (``timestamp``, when
    it is an aware ISO 8601 time) and every other key as ``fields``; an ``operator`` key equal
    to ``operator_id`` is dropped as redundant. Any other line is a plain event: info on
    stdout, warning on stderr, control characters but tab removed, cut to 16 KiB. Records
    without a time of their own are stamped with the capture time. ``stream`` is set either way.
    """
    try:
        return _record_from_line(operator_id, line, stream)
    except Exception:  # pragma: no cover - defensive: a bug here must not lose the line
        text = _cut(_STRIP_RE.sub("", str(line)))
        return LogRecord(
            operator=operator_id,
            level=LogLevel.WARNING if stream == "stderr" else LogLevel.INFO,
            event=text,
            time=utcnow(),
            stream=stream,
        )


def _record_from_line(
    operator_id: str, line: str, stream: Literal["stdout", "stderr"]
) -> LogRecord:
    stripped = line.strip()
    if stripped.startswith("{") and len(line) <= MAX_LINE_BYTES:
        try:
            data = json.loads(stripped)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("event"), str):
            fields: dict[str, Any] = {}
            for key, value in data.items():
                if key in ("event", "level", "timestamp"):
                    continue
                if key == "operator" and value == operator_id:
                    continue
                fields[_valid_str(key)] = _clean_json(value, 1)
            return LogRecord(
                operator=operator_id,
                level=level_from_name(data.get("level")),
                event=_cut(_valid_str(data["event"])),
                time=_parse_time(data.get("timestamp")) or utcnow(),
                stream=stream,
                fields=fields,
            )
    return LogRecord(
        operator=operator_id,
        level=LogLevel.WARNING if stream == "stderr" else LogLevel.INFO,
        event=_cut(_STRIP_RE.sub("", line)),
        time=utcnow(),
        stream=stream,
    )


# ---------------------------------------------------------------------------------------------
# Shipping records to the bus


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


# ---------------------------------------------------------------------------------------------
# structlog configuration


def _add_logger_name(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    name = getattr(logger, "name", None)
    if isinstance(name, str) and name:
        event_dict.setdefault("logger", name)
    return event_dict


def _add_operator(operator_id: str) -> Any:
    def processor(
        logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event_dict.setdefault("operator", operator_id)
        return event_dict

    return processor


def _level_number(level: str) -> int:
    number = logging.getLevelNamesMapping().get(level.strip().upper())
    if number is None:
        raise LogQueryError(
            f"unknown log level {level!r}: use debug, info, warning, error or critical"
        )
    return number


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


class _NamedPrintLogger(structlog.PrintLogger):
    """structlog's PrintLogger that remembers the name it was asked for."""

    def __init__(self, file: TextIO, name: str | None) -> None:
        super().__init__(file)
        self.name = name


class SafeStream:
    """A text stream for console logs that never raises: a closed terminal or pipe (EIO,
    EPIPE) silences the console instead of failing the caller, whose events still reach the
    bus. The supervisor must outlive the terminal it was started from."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self._stream.write(text)
            except (OSError, ValueError):
                self.broken = True
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self.broken = True

    def isatty(self) -> bool:
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False


class _NamedPrintLoggerFactory:
    """A logger factory for :class:`_NamedPrintLogger` on one file."""

    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedPrintLogger:
        name = args[0] if args and isinstance(args[0], str) else None
        return _NamedPrintLogger(self._file, name)


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


class BoundedJSONRenderer:
    """structlog's JSON renderer, keeping every line within ``limit`` bytes.

    The supervisor cuts longer lines into pieces, which would turn one event into several
    lines of broken JSON. An event over the limit has its largest values cut in the middle
    (head and tail kept: a traceback's last line says what went wrong) and gets
    ``"truncated": true``. Output is ASCII (non-ASCII is escaped), so characters are bytes.
    """

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self.limit = limit
        self._render = structlog.processors.JSONRenderer()

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> str:
        """Render ``event_dict`` as one JSON line of at most ``limit`` bytes."""
        line = str(self._render(logger, method_name, event_dict))
        if len(line) <= self.limit:
            return line
        data: dict[str, Any] = {**event_dict, "truncated": True}
        for _ in range(len(data) + 1):
            line = str(self._render(logger, method_name, dict(data)))
            excess = len(line) - self.limit
            if excess <= 0:
                return line
            sizes = {k: len(_dumps(v)) for k, v in data.items()}
            key = max(sizes, key=sizes.__getitem__)
            value = data[key]
            text = value if isinstance(value, str) else _dumps(value)
            keep = max(0, len(text) - excess - 64)
            data[key] = (
                f"{text[: keep // 2]}...[cut]...{text[len(text) - keep // 2 :]}"
                if keep
                else "...[cut]..."
            )
        minimal = {k: event_dict[k] for k in ("level", "timestamp", "operator") if k in event_dict}
        event = str(event_dict.get("event", ""))[: self.limit // 8]
        return json.dumps({"event": event, **minimal, "truncated": True})[: self.limit]


def _replace_writer(new: StderrJsonWriter | None) -> None:
    """Retire the writer of the current structlog configuration, if it is not ``new``."""
    try:
        old = structlog.get_config().get("logger_factory")
    except Exception:  # pragma: no cover - structlog's API
        return
    if isinstance(old, StderrJsonWriter) and old is not new:
        atexit.unregister(old.close)
        old.close(0.5)


def configure_operator_logging(
    operator_id: str,
    *,
    json_lines: bool,
    level: str = "info",
    stream: TextIO | None = None,
    capacity: int = 10000,
) -> StderrJsonWriter | None:
    """Configure structlog for an operator process.

    With ``json_lines`` (the operator runs under a supervisor: ``EEVEE_SUPERVISOR`` is set)
    every event is one JSON object per line, ``{"event", "level", "timestamp", "logger",
    "operator", ...context}``, exceptions rendered into ``"exception"``, written to ``stream``
    (stderr) by a :class:`StderrJsonWriter`, which is returned; it is flushed (bounded) at
    exit. Otherwise a readable console format on ``stream`` (colours on a TTY only), written
    directly, and None is returned. Raises :class:`LogQueryError` for an unknown ``level``.
    """
    threshold = _level_number(level)
    out: Any = SafeStream(stream if stream is not None else sys.stderr)
    common: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_logger_name,
        _add_operator(operator_id),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    writer: StderrJsonWriter | None = None
    if json_lines:
        writer = StderrJsonWriter(out, capacity=capacity, operator=operator_id)
        processors = [
            *common,
            structlog.processors.format_exc_info,
            BoundedJSONRenderer(),
        ]
        factory: Any = writer
    else:
        processors = [*common, structlog.dev.ConsoleRenderer(colors=_isatty(out))]
        factory = _NamedPrintLoggerFactory(out)
    _replace_writer(writer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    if writer is not None:
        atexit.register(writer.close, 1.0)
    return writer


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except Exception:
        return False


def _jsonable(value: Any, depth: int = 0) -> Any:
    """Any Python value as JSON-compatible data (unknown objects become their repr)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _valid_str(value)
    if isinstance(value, Enum):
        return _jsonable(value.value, depth)
    if isinstance(value, datetime):
        return value.isoformat()
    if depth >= 8:
        return _valid_str(repr(value))
    if isinstance(value, Mapping):
        return {_valid_str(str(k)): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, os.PathLike):
        return _valid_str(os.fspath(value)) if isinstance(os.fspath(value), str) else repr(value)
    return _valid_str(repr(value))


def _supervisor_shipper(
    submit: Callable[[LogRecord], None] | None, source: str
) -> Callable[[Any, str, MutableMapping[str, Any]], MutableMapping[str, Any]]:
    def processor(
        logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        relayed = event_dict.pop(RELAYED_KEY, False)
        if submit is None or relayed:
            return event_dict
        try:
            data = dict(event_dict)
            if "exc_info" in data and "exception" not in data:
                data = dict(structlog.processors.format_exc_info(logger, method_name, data))
            data.pop("exc_info", None)
            fields = {
                _valid_str(str(k)): _jsonable(v)
                for k, v in data.items()
                if k not in ("event", "level", "timestamp")
            }
            submit(
                LogRecord(
                    operator=source,
                    level=level_from_name(data.get("level", method_name)),
                    event=_cut(_valid_str(str(data.get("event", "")))),
                    time=_parse_time(data.get("timestamp")) or utcnow(),
                    fields=fields,
                )
            )
        except Exception:  # shipping must never break logging
            pass
        return event_dict

    return processor


def configure_supervisor_logging(
    shipper_submit: Callable[[LogRecord], None] | None,
    *,
    json: bool,
    level: str,
    stream: TextIO | None = None,
    source: str = SUPERVISOR_SOURCE,
) -> None:
    """Configure structlog for the supervisor process.

    Events go to ``stream`` (stderr) as today: a console format (colours on a TTY) or, with
    ``json``, one JSON object per line. With ``shipper_submit`` (a :meth:`LogShipper.submit`)
    each event is also turned into a :class:`LogRecord` of operator ``source`` and submitted;
    an ``operator=<id>`` key of the supervisor's events about an operator stays in ``fields``.
    Events logged with ``_relayed=True`` (see :func:`relay_record`: operator output the
    supervisor shows on its console) are not submitted, and the marker is never rendered.
    """
    threshold = _level_number(level)
    out: Any = SafeStream(stream if stream is not None else sys.stderr)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        processors.append(structlog.processors.format_exc_info)
    processors.append(_supervisor_shipper(shipper_submit, source))
    processors.append(
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=_isatty(out))
    )
    _replace_writer(None)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=_NamedPrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def relay_record(record: LogRecord, logger: Any = None) -> None:
    """Show an operator's record through the supervisor's structlog, marked as relayed.

    The event carries ``operator``, ``stream`` and the record's fields (a field that clashes
    with a reserved key gets a ``_`` suffix), and is not shipped again.
    """
    log = logger if logger is not None else structlog.get_logger("eeveepy.relay")
    kw: dict[str, Any] = {}
    for key, value in record.fields.items():
        if key in ("event", "level", "timestamp", "operator", "stream", RELAYED_KEY):
            key = key + "_"
        kw[key] = value
    kw["operator"] = record.operator
    if record.stream is not None:
        kw["stream"] = record.stream
    kw[RELAYED_KEY] = True
    method = record.level.value  # debug, info, warning, error, critical
    getattr(log, method)(record.event, **kw)


# ---------------------------------------------------------------------------------------------
# The history stream


async def ensure_log_stream(
    js: JetStreamContext,
    prefix: str,
    *,
    max_age: float,
    max_bytes: int,
    timeout: float = 10.0,
) -> None:
    """Create the log stream of ``prefix``, or bring an existing one's limits up to date.

    The stream keeps ``{p}.log.>`` in files, at most ``max_age`` seconds and ``max_bytes``
    bytes, discarding the oldest. Bounded by ``timeout``; raises :class:`BusError` saying why
    on failure (JetStream disabled, subjects taken by another stream, ...).
    """
    name = stream_name(prefix)
    subjects = [f"{prefix}.log.>"]
    if max_age <= 0 or max_bytes <= 0:
        raise BusError(f"log stream {name}: max_age and max_bytes must be positive")
    try:
        async with asyncio.timeout(timeout):
            try:
                info = await js.stream_info(name)
            except NotFoundError:
                try:
                    await js.add_stream(
                        StreamConfig(
                            name=name,
                            description=f"log history of {prefix}",
                            subjects=subjects,
                            retention=RetentionPolicy.LIMITS,
                            storage=StorageType.FILE,
                            discard=DiscardPolicy.OLD,
                            max_age=max_age,
                            max_bytes=max_bytes,
                            duplicate_window=min(120.0, max_age),
                            num_replicas=1,
                        )
                    )
                    return
                except BadRequestError as exc:
                    if exc.err_code != 10058:  # not "stream name already in use"
                        raise
                info = await js.stream_info(name)
            cfg = info.config
            if (
                cfg.subjects == subjects
                and cfg.max_bytes == max_bytes
                and cfg.max_age is not None
                and abs(cfg.max_age - max_age) < 1e-6
                and cfg.discard == DiscardPolicy.OLD
            ):
                return
            await js.update_stream(
                cfg.evolve(
                    subjects=subjects,
                    max_age=max_age,
                    max_bytes=max_bytes,
                    discard=DiscardPolicy.OLD,
                    # The server refuses a duplicates window longer than max_age.
                    duplicate_window=min(cfg.duplicate_window or max_age, max_age),
                )
            )
    except TimeoutError:
        raise BusError(
            f"log stream {name}: no answer from JetStream within {timeout:g} s"
        ) from None
    except ServiceUnavailableError:
        raise BusError(f"log stream {name}: JetStream is not available on this server") from None
    except (nats.errors.Error, OSError) as exc:
        reason = getattr(exc, "description", None) or str(exc) or type(exc).__name__
        raise BusError(f"cannot create or update the log stream {name}: {reason}") from None


# ---------------------------------------------------------------------------------------------
# Reading history


def _is_glob(pattern: str) -> bool:
    return any(c in _GLOB_CHARS for c in pattern)


def render_fields(fields: Mapping[str, Any]) -> str:
    """``key=value`` pairs, values quoted (JSON) when needed; terminal controls escaped."""
    parts = []
    for key, value in fields.items():
        if isinstance(value, str):
            text = value if _BARE_VALUE_RE.fullmatch(value) else _dumps(value)
        else:
            text = _dumps(value)
        parts.append(f"{_escape(str(key))}={_escape(text)}")
    return " ".join(parts)


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)
    except (ValueError, TypeError, RecursionError):
        return repr(value)


def _escape(text: str) -> str:
    """``text`` with every character a terminal could act on written as an escape."""
    if not _ESCAPE_RE.search(text):
        return text
    return _ESCAPE_RE.sub(lambda m: _ESCAPES.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


@dataclass
class LogFilter:
    """What ``eevee logs`` shows.

    ``operators``: operator ids, exact (``echo``) or fnmatch globs (``irc.*``); empty = all.
    ``min_level``: the lowest level shown. ``since``: records logged at or after this time
    (naive = UTC). ``grep``: a case-insensitive substring of the event or its rendered fields.
    """

    operators: list[str] = field(default_factory=list)
    min_level: LogLevel | None = None
    since: datetime | None = None
    grep: str | None = None

    def __post_init__(self) -> None:
        if self.since is not None and self.since.tzinfo is None:
            self.since = self.since.replace(tzinfo=UTC)

    def matches(self, env: Envelope[LogRecord]) -> bool:
        """True when ``env`` passes every criterion."""
        record = env.body
        if self.operators:
            # The supervisor's events about an operator (state changes, restarts) belong to it.
            about = record.fields.get("operator") if record.operator == SUPERVISOR_SOURCE else None
            names = [record.operator] if not isinstance(about, str) else [record.operator, about]
            if not any(
                name == p or (_is_glob(p) and fnmatch.fnmatchcase(name, p))
                for p in self.operators
                for name in names
            ):
                return False
        if self.min_level is not None and _LEVEL_ORDER[record.level] < _LEVEL_ORDER[self.min_level]:
            return False
        if self.since is not None and (record.time or env.timestamp) < self.since:
            return False
        if self.grep:
            needle = self.grep.lower()
            if needle not in record.event.lower() and (
                not record.fields or needle not in render_fields(record.fields).lower()
            ):
                return False
        return True

    def subjects(self, prefix: str) -> list[str]:
        """The narrowest stream subjects holding every match (the filter still applies)."""
        levels: list[str] = ["*"]
        if self.min_level is not None and self.min_level is not LogLevel.DEBUG:
            floor = _LEVEL_ORDER[self.min_level]
            levels = [lv.value for lv in LogLevel if _LEVEL_ORDER[lv] >= floor]
        ids: list[str] = [">"]
        if self.operators and not any(_is_glob(p) for p in self.operators):
            try:
                ids = sorted({validate_operator_id(p) for p in self.operators})
                ids.append(SUPERVISOR_SOURCE)
            except SubjectError:
                ids = [">"]  # no such subject: the filter alone rejects it
        subjects = [f"{prefix}.log.{lv}.{op}" for lv in levels for op in ids]
        if subjects == [f"{prefix}.log.*.>"] or len(subjects) > 64:
            return [f"{prefix}.log.>"]
        return subjects


def parse_since(text: str, now: datetime) -> datetime:
    """A ``--since`` value: a duration ago (``30s``, ``10m``, ``1h``, ``2d``, ``1w``) or an
    ISO 8601 time (naive = UTC). Raises :class:`LogQueryError`."""
    value = text.strip()
    match = _SINCE_RE.fullmatch(value.lower())
    if match is not None:
        amount, unit = float(match.group(1)), match.group(2)
        try:
            return now - timedelta(**{_SINCE_UNITS[unit]: amount})
        except OverflowError:
            raise LogQueryError(f"--since {text!r} is too far back") from None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise LogQueryError(
            f"--since {text!r}: expected a duration such as 30s, 10m, 1h, 2d or an ISO 8601 "
            "time such as 2026-01-02T15:04:05Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


@dataclass
class LogReadStats:
    """Counters of one :func:`read_logs` call."""

    received: int = 0
    matched: int = 0
    skipped: int = 0
    """Messages in the stream that are not valid log envelopes."""


async def read_logs(
    js: JetStreamContext,
    prefix: str,
    flt: LogFilter,
    *,
    follow: bool,
    tail: int | None,
    stats: LogReadStats | None = None,
    timeout: float = 5.0,
) -> AsyncIterator[Envelope[LogRecord]]:
    """Yield the records of the log stream of ``prefix`` that ``flt`` matches, oldest first.

    History starts at ``flt.since`` when set, else at the beginning; with ``tail`` only the
    last ``tail`` matching records of the history are yielded (they are collected until the
    consumer has caught up). Without ``follow`` the iteration ends at the end of the history;
    with it, new records are yielded as they arrive until the caller stops iterating.
    Malformed messages are skipped and counted in ``stats``. Raises :class:`BusError` when the
    stream cannot be read (missing, JetStream down); ``timeout`` bounds each JetStream request.
    """
    counters = stats if stats is not None else LogReadStats()
    name = stream_name(prefix)
    subjects = flt.subjects(prefix)
    config = ConsumerConfig()
    policy = DeliverPolicy.ALL
    if flt.since is not None:
        policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = flt.since
    elif tail == 0:
        policy = DeliverPolicy.NEW
    if len(subjects) > 1:
        config.filter_subjects = subjects
    if tail == 0 and not follow:
        return
    decoder = EnvelopeDecoder(LogRecord)
    try:
        sub = await asyncio.wait_for(
            js.subscribe(
                subjects[0],
                stream=name,
                config=config,
                ordered_consumer=True,
                deliver_policy=policy,
            ),
            timeout,
        )
    except TimeoutError:
        raise BusError(
            f"log stream {name}: no answer from JetStream within {timeout:g} s"
        ) from None
    except NotFoundError:
        raise BusError(f"no log stream {name}: is `eevee up` running with this prefix?") from None
    except nats.errors.Error as exc:
        reason = getattr(exc, "description", None) or str(exc) or type(exc).__name__
        raise BusError(f"cannot read the log stream {name}: {reason}") from None
    try:
        caught_up = await _caught_up(sub, timeout, drained=False)
        buffered: deque[Envelope[LogRecord]] | None = (
            deque(maxlen=tail) if tail is not None and not caught_up else None
        )
        if caught_up and not follow:
            return
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except nats.errors.TimeoutError:
                if not caught_up and await _caught_up(sub, timeout, drained=True):
                    caught_up = True
                    for env in buffered or ():
                        yield env
                    buffered = None
                    if not follow:
                        return
                continue
            except nats.errors.ConnectionClosedError:
                raise BusError(f"connection closed while reading {name}") from None
            counters.received += 1
            try:
                remaining: int | None = msg.metadata.num_pending
            except Exception:
                remaining = None
            try:
                env = decoder.decode(msg.data, msg.subject)
            except EnvelopeError:
                counters.skipped += 1
            else:
                if flt.matches(env):
                    counters.matched += 1
                    if buffered is not None:
                        buffered.append(env)
                    else:
                        yield env
            if not caught_up and remaining == 0:
                caught_up = True
                for held in buffered or ():
                    yield held
                buffered = None
                if not follow:
                    return
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sub.unsubscribe(), 1.0)


async def _caught_up(sub: Any, timeout: float, *, drained: bool) -> bool:
    """True when the consumer has no more history to deliver.

    ``drained`` says every message delivered so far has been taken from the subscription;
    otherwise the last one delivered will say it was the last (``num_pending == 0``).
    """
    try:
        info = await asyncio.wait_for(sub.consumer_info(), timeout)
    except Exception:
        return False
    if info.num_pending:
        return False
    delivered = info.delivered.consumer_seq if info.delivered is not None else 0
    return drained or delivered == 0


def render(env: Envelope[LogRecord], *, color: bool, tz: tzinfo = UTC) -> str:
    """One line: ``HH:MM:SS.mmm LEVEL operator event key=value...`` (``tz`` for the time).

    Characters a terminal could act on are escaped, so a record cannot move the cursor or
    change colours; with ``color`` the level (and the time, dimmed) are coloured.
    """
    record = env.body
    when = (record.time or env.timestamp).astimezone(tz)
    clock = when.strftime("%H:%M:%S.") + f"{when.microsecond // 1000:03d}"
    level = record.level.value.upper().ljust(8)
    if color:
        clock = f"{_DIM}{clock}{_RESET}"
        level = f"{_COLORS[record.level]}{level}{_RESET}"
    parts = [clock, level, _escape(record.operator), _escape(record.event)]
    if record.fields:
        parts.append(render_fields(record.fields))
    return " ".join(parts)
