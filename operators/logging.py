"""Logging: writes every log event of the bus to JSON-lines files, one file per operator.

Every log event is published as an ``Envelope[LogRecord]`` on ``{p}.log.{level}.{operator_id}``
and kept for a while by the JetStream stream ``<PREFIX>_LOGS`` (see :func:`log_stream_name`),
which the supervisor creates. This operator reads that stream through a durable pull consumer
(:data:`DURABLE`), so the events published while it was down are written when it comes back,
and appends each event to ``<directory>/<operator>.jsonl``: one line per event, the envelope
JSON as it was received, so ``jq`` reads the files as they are::

    cd ~/.local/state/eevee/log/operators
    jq -r '[.timestamp, .body.level, .body.event] | @tsv' echo.jsonl

The file is named after the record's ``operator`` field, checked as an operator id. A payload
that is not a valid log envelope, or whose ``operator`` is not an operator id, goes to
``_invalid.jsonl`` instead, wrapped in a ``dlq`` envelope (a :class:`~eeveepy.models.DeadLetter`
whose ``payload`` is the payload as received, ``reason`` says what was wrong), so that file too
holds one JSON envelope per line and no name can reach outside the directory.

A file is rotated before a write would take it over ``max_bytes``: ``<id>.jsonl`` becomes
``<id>.jsonl.1``, ``.1`` becomes ``.2`` and so on up to ``backups`` files; older ones are
deleted, and so are rotated files older than ``max_age_days`` (checked at start, on reload and
hourly). Files are written by one worker thread through buffered handles (at most
``max_open_files`` open, least recently used closed first), flushed (and fsynced with
``fsync``) after each batch, before the batch is acknowledged: delivery is at least once, and
exactly once across clean restarts.

Without the stream (``stream = false``, or still missing after ``stream_wait`` seconds) it
falls back to a plain subscription on ``{p}.log.>``, with a warning: events published while it
is down are then lost. In that mode it looks for the stream every 30 s and switches to it when
it appears.

Run it under ``eevee up`` (``module = "operators.logging"``, id ``logging``) or alone::

    python -m operators.logging --id logging --nats-url nats://127.0.0.1:4222
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Final, TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ConfigDict, Field

from eeveepy.codec import EnvelopeDecoder, EnvelopeEncoder, dead_letter
from eeveepy.errors import EeveeError, EnvelopeError, SubjectError
from eeveepy.models import LogRecord
from eeveepy.paths import Paths
from eeveepy.runtime import Operator
from eeveepy.subjects import validate_operator_id

__all__ = [
    "DURABLE",
    "INVALID_NAME",
    "BatchResult",
    "LogFiles",
    "LoggingSettings",
    "create",
    "log_stream_name",
    "main",
    "resolve_directory",
]

DURABLE: Final = "logging-files"
"""Name of the durable JetStream consumer that remembers what has been written."""
INVALID_NAME: Final = "_invalid"
"""File stem of the events that cannot be filed under an operator (never an operator id)."""

FETCH_BATCH: Final = 256
"""Most messages fetched from the stream at once."""
FETCH_TIMEOUT: Final = 1.0
"""Seconds one fetch waits for messages; also the longest a stop waits for the consumer."""
MAX_ACK_PENDING: Final = 4 * FETCH_BATCH
"""Unacknowledged messages the server lets the consumer have (set when it is created)."""
ACK_WAIT: Final = 30.0
"""Seconds before the server redelivers a message that was not acknowledged."""
RETRY_DELAY: Final = 5.0
"""Seconds before a message that could not be written is redelivered."""
CONSUMER_CHECK: Final = 30.0
"""Seconds of idle fetching after which the consumer is checked to still exist."""
STREAM_RECHECK: Final = 30.0
"""Seconds between looks for the stream while on the plain subscription."""
CORE_QUEUE_LIMIT: Final = 100_000
"""Events buffered on the plain subscription (while halted or slow) before dropping."""
PRUNE_INTERVAL: Final = 3600.0
"""Seconds between deletions of old rotated files."""
REPORT_INTERVAL: Final = 60.0
"""Seconds between summaries of invalid, failed and dropped events (never one per event)."""

_ROTATED_RE: Final = re.compile(r"(?P<name>.+)\.jsonl\.(?P<n>[1-9][0-9]{0,5})")
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_WRITE_BUFFER: Final = 64 * 1024

T = TypeVar("T")


class LoggingSettings(BaseModel):
    """Settings of the logging operator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    directory: str | None = None
    """Where the files go; default ``<log dir>/operators``, relative paths under the data dir."""
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    """A file is rotated before a write would take it over this size."""
    backups: int = Field(default=5, ge=0)
    """Rotated files kept per operator (``<id>.jsonl.1`` newest ... ``.N``); 0 keeps none."""
    max_age_days: float = Field(default=14.0, gt=0)
    """Rotated files older than this (by modification time) are deleted."""
    stream: bool = True
    """Read the ``<PREFIX>_LOGS`` JetStream stream with a durable consumer."""
    stream_wait: float = Field(default=10.0, ge=0)
    """Seconds to wait for the stream to exist before falling back to a plain subscription."""
    fsync: bool = False
    """fsync each file written to after each batch (slower, survives a power cut)."""
    max_open_files: int = Field(default=32, ge=1)
    """Files kept open at once; the least recently used is closed first."""


def log_stream_name(prefix: str) -> str:
    """The JetStream stream holding the log events under ``prefix``: ``eevee`` -> ``EEVEE_LOGS``."""
    return prefix.upper().replace(".", "_") + "_LOGS"


def resolve_directory(settings: LoggingSettings, data_dir: Path) -> Path:
    """The directory the files go to: absolute, relative to ``data_dir``, or the default."""
    if settings.directory is None:
        return Paths.default().log_dir / "operators"
    path = Path(settings.directory).expanduser()
    return path if path.is_absolute() else data_dir / path


# -- the files ---------------------------------------------------------------------------------


@dataclass
class BatchResult:
    """What :meth:`LogFiles.write_batch` did with a batch."""

    written: int = 0
    """Events written to an operator's file."""
    invalid: int = 0
    """Events written to ``_invalid.jsonl``."""
    failed: list[int] = field(default_factory=list)
    """Indexes of the events that could not be written (to be retried)."""
    error: str | None = None
    """The first I/O error met, if any."""


@dataclass
class _OpenFile:
    handle: BinaryIO
    size: int
    unflushed: list[int] = field(default_factory=list)  # batch indexes written since the flush


class LogFiles:
    """The JSON-lines files of one directory: classify, write, rotate, prune.

    Not thread-safe: use it from one thread at a time (the operator uses one worker thread).
    Build it with :meth:`open`, which creates the directory.
    """

    def __init__(
        self,
        directory: Path,
        *,
        receiver: str,
        max_bytes: int,
        backups: int,
        max_age_days: float,
        fsync: bool = False,
        max_open_files: int = 32,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.backups = backups
        self.max_age_s = max_age_days * 86400.0
        self.fsync = fsync
        self.max_open_files = max_open_files
        self._receiver = receiver
        self._decoder = EnvelopeDecoder(LogRecord)
        self._encoder = EnvelopeEncoder(receiver)
        self._files: OrderedDict[str, _OpenFile] = OrderedDict()
        self._result = BatchResult()

    @classmethod
    def open(cls, settings: LoggingSettings, *, data_dir: Path, receiver: str) -> LogFiles:
        """Files as ``settings`` say, the directory created (mode 0700) if missing."""
        directory = resolve_directory(settings, data_dir)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return cls(
            directory,
            receiver=receiver,
            max_bytes=settings.max_bytes,
            backups=settings.backups,
            max_age_days=settings.max_age_days,
            fsync=settings.fsync,
            max_open_files=settings.max_open_files,
        )

    def path(self, name: str, index: int = 0) -> Path:
        """``<directory>/<name>.jsonl``, or its rotated file number ``index``."""
        return self.directory / (f"{name}.jsonl.{index}" if index else f"{name}.jsonl")

    # -- writing -------------------------------------------------------------------------------

    def write_batch(self, items: Sequence[tuple[str, bytes]]) -> BatchResult:
        """Write ``(subject, payload)`` pairs, each to its file, then flush them all."""
        self._result = result = BatchResult()
        names: list[str] = []
        for index, (subject, payload) in enumerate(items):
            name, line = self.classify(subject, payload)
            names.append(name)
            try:
                self._write(name, line, index)
            except OSError as exc:
                self._failed([index], exc)
        self.flush()
        failed = set(result.failed)
        result.failed = sorted(failed)
        for index, name in enumerate(names):
            if index in failed:
                continue
            if name == INVALID_NAME:
                result.invalid += 1
            else:
                result.written += 1
        return result

    def classify(self, subject: str, payload: bytes) -> tuple[str, bytes]:
        """``(file stem, line)`` for a payload received on ``subject``."""
        try:
            env = self._decoder.decode(payload, subject)
        except EnvelopeError as exc:
            return INVALID_NAME, self._invalid_line(subject, exc.reason, payload)
        name = env.body.operator
        try:
            validate_operator_id(name)
        except SubjectError as exc:
            return INVALID_NAME, self._invalid_line(subject, str(exc), payload)
        return name, _one_line(payload)

    def _invalid_line(self, subject: str, reason: str, payload: bytes) -> bytes:
        letter = dead_letter(subject, reason, self._receiver, payload, limit=len(payload))
        return self._encoder.encode(letter)[1] + b"\n"

    def _write(self, name: str, line: bytes, index: int) -> None:
        f = self._open(name)
        if f.size and f.size + len(line) > self.max_bytes:
            f = self._rotate(name)
        f.handle.write(line)
        f.size += len(line)
        f.unflushed.append(index)

    def _open(self, name: str) -> _OpenFile:
        f = self._files.get(name)
        if f is not None:
            self._files.move_to_end(name)
            return f
        while len(self._files) >= self.max_open_files:
            _, oldest = self._files.popitem(last=False)
            self._close(oldest)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _CLOEXEC
        fd = os.open(self.path(name), flags, 0o600)
        try:
            size = os.fstat(fd).st_size
            handle = os.fdopen(fd, "ab", buffering=_WRITE_BUFFER)
        except BaseException:
            os.close(fd)
            raise
        f = self._files[name] = _OpenFile(handle, size)
        return f

    def _rotate(self, name: str) -> _OpenFile:
        """Close ``name``'s file, shift the rotated ones (dropping the oldest), open anew."""
        f = self._files.pop(name)
        self._close(f)
        base = self.path(name)
        if self.backups == 0:
            base.unlink(missing_ok=True)
        else:
            self.path(name, self.backups).unlink(missing_ok=True)
            for i in range(self.backups - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.path(name, i), self.path(name, i + 1))
            os.replace(base, self.path(name, 1))
        return self._open(name)

    def flush(self) -> None:
        """Flush (and fsync, if asked) every file written to since the last flush."""
        for name, f in list(self._files.items()):
            if not f.unflushed:
                continue
            try:
                f.handle.flush()
                if self.fsync:
                    os.fsync(f.handle.fileno())
            except OSError as exc:
                self._failed(f.unflushed, exc)
                self._files.pop(name, None)
                with contextlib.suppress(OSError):
                    f.handle.close()
            f.unflushed = []

    def _close(self, f: _OpenFile) -> None:
        try:
            f.handle.flush()
            if self.fsync and f.unflushed:
                os.fsync(f.handle.fileno())
        except OSError as exc:
            self._failed(f.unflushed, exc)
        finally:
            f.unflushed = []
            with contextlib.suppress(OSError):
                f.handle.close()

    def _failed(self, indexes: list[int], exc: OSError) -> None:
        self._result.failed.extend(indexes)
        if self._result.error is None:
            self._result.error = str(exc)

    def close(self) -> None:
        """Flush and close every file."""
        while self._files:
            _, f = self._files.popitem(last=False)
            self._close(f)

    # -- pruning -------------------------------------------------------------------------------

    def prune(self, now: float | None = None) -> int:
        """Delete rotated files beyond ``backups`` or older than ``max_age_days``; count them.

        Only ``<name>.jsonl.<n>`` files whose name is an operator id (or ``_invalid``) are
        considered, so nothing else in the directory is touched.
        """
        cutoff = (time.time() if now is None else now) - self.max_age_s
        deleted = 0
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return 0
        for entry in entries:
            match = _ROTATED_RE.fullmatch(entry.name)
            if match is None or not _is_file_name(match["name"]):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                old = entry.stat(follow_symlinks=False).st_mtime < cutoff
                if old or int(match["n"]) > self.backups:
                    os.unlink(entry.path)
                    deleted += 1
            except OSError:
                continue
        return deleted


def _is_file_name(name: str) -> bool:
    if name == INVALID_NAME:
        return True
    try:
        validate_operator_id(name)
    except SubjectError:
        return False
    return True


def _one_line(payload: bytes) -> bytes:
    """A valid JSON payload as one line: line breaks can only be whitespace in valid JSON."""
    line = payload.strip()
    if b"\n" in line or b"\r" in line:
        line = line.replace(b"\r", b" ").replace(b"\n", b" ")
    return line + b"\n"


# -- the operator ------------------------------------------------------------------------------


@dataclass
class _Counts:
    written: int = 0
    invalid: int = 0
    failed: int = 0
    dropped: int = 0

    def problems(self) -> tuple[int, int, int]:
        return self.invalid, self.failed, self.dropped


class _StreamMissing(EeveeError):
    """The log stream does not exist (or JetStream is not available)."""


class _Service:
    """The state of a running logging operator: its files, its consumer, its counters."""

    def __init__(self, op: Operator[LoggingSettings]) -> None:
        self.op = op
        self.files: LogFiles | None = None
        self.counts = _Counts()
        self.halted = False
        self.source: _Source | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_error_log = 0.0

    # -- the worker thread -------------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` on the file thread: file operations never run concurrently."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="logging-files")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open_files(self) -> LogFiles:
        settings = self.op.settings
        files: LogFiles = await self.run(_open_files, settings, self.op.data_dir, self.op.id)
        return files

    async def write(self, items: Sequence[tuple[str, bytes]]) -> BatchResult:
        """Write a batch through the current files; count it; report I/O errors (rate-limited)."""
        files = self.files
        assert files is not None
        result: BatchResult = await self.run(files.write_batch, items)
        self.counts.written += result.written
        self.counts.invalid += result.invalid
        self.counts.failed += len(result.failed)
        if result.error is not None:
            now = time.monotonic()
            if now - self._last_error_log >= REPORT_INTERVAL:
                self._last_error_log = now
                self.op.log.error(
                    "cannot write log files", error=result.error, directory=str(files.directory)
                )
        return result

    async def prune(self) -> None:
        files = self.files
        if files is not None:
            deleted = await self.run(files.prune)
            if deleted:
                self.op.log.info("old log files deleted", count=deleted)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.files = await self.open_files()
        await self.prune()
        self.start_source()
        self._spawn(self._maintain())
        settings = self.op.settings
        self.op.log.info(
            "writing log files",
            directory=str(self.files.directory),
            stream=log_stream_name(self.op.subjects.prefix) if settings.stream else None,
        )

    def start_source(self) -> None:
        self.source = _Source(self, self.op.ipc.nc, self.op.settings)
        self.source.task = self._spawn(self.source.run())

    async def stop_source(self, timeout: float) -> None:
        source, self.source = self.source, None
        if source is not None:
            await source.stop(timeout)

    async def reload(self) -> None:
        """Reopen the files (the directory may have changed), rebind if ``stream`` changed."""
        new = await self.open_files()
        old, self.files = self.files, new
        if old is not None:
            await self.run(old.close)
        await self.prune()
        source = self.source
        if source is None or source.settings.stream != self.op.settings.stream:
            await self.stop_source(FETCH_TIMEOUT + 2.0)
            self.start_source()
        self.op.log.info("log files reopened", directory=str(new.directory))

    async def stop(self, timeout: float) -> None:
        await self.stop_source(timeout)
        for task in list(self._tasks):
            task.cancel()
        files, self.files = self.files, None
        if files is not None:
            await self.run(files.close)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        c = self.counts
        self.op.log.info(
            "log files closed",
            written=c.written,
            invalid=c.invalid,
            failed=c.failed,
            dropped=c.dropped,
        )

    def halt(self) -> None:
        self.halted = True

    def resume(self) -> None:
        self.halted = False
        if self.source is not None:
            self.source.wake.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _maintain(self) -> None:
        """Report problems now and then (never per event); prune old files hourly."""
        last_prune = time.monotonic()
        reported = self.counts.problems()
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            now = self.counts.problems()
            if now != reported:
                self.op.log.warning(
                    "log events not filed normally",
                    invalid=now[0] - reported[0],
                    failed=now[1] - reported[1],
                    dropped=now[2] - reported[2],
                    period_s=REPORT_INTERVAL,
                )
                reported = now
            if time.monotonic() - last_prune >= PRUNE_INTERVAL:
                last_prune = time.monotonic()
                with contextlib.suppress(Exception):
                    await self.prune()


def _open_files(settings: LoggingSettings, data_dir: Path, receiver: str) -> LogFiles:
    return LogFiles.open(settings, data_dir=data_dir, receiver=receiver)


class _Source:
    """Where the events come from: the stream's durable consumer, or a plain subscription.

    One per settings generation; :meth:`stop` ends it after the batch in hand is written and
    acknowledged.
    """

    def __init__(self, svc: _Service, nc: NatsClient, settings: LoggingSettings) -> None:
        self.svc = svc
        self.nc = nc
        self.settings = settings
        self.log = svc.op.log
        self.prefix = svc.op.subjects.prefix
        self.subject = f"{self.prefix}.log.>"
        self.stream = log_stream_name(self.prefix)
        self.quit = asyncio.Event()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.from_subscription = False
        self.stream_created: datetime | None = None
        self.acked_seq = 0  # highest stream sequence written and acknowledged

    async def stop(self, timeout: float) -> None:
        self.quit.set()
        self.wake.set()
        task = self.task
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            self.log.warning("log consumer did not stop in time: cancelled", timeout=timeout)
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, cut short by :meth:`stop`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.quit.wait(), seconds)

    async def _until_resumed(self) -> bool:
        """Wait while the operator is halted; False once stopping."""
        while self.svc.halted and not self.quit.is_set():
            self.wake.clear()
            await self.wake.wait()
        return not self.quit.is_set()

    async def run(self) -> None:
        """Consume until stopped; never raises (errors are logged, rate-limited, and retried)."""
        if not self.settings.stream:
            await self._consume_core(recheck=False)
            return
        backoff = 0.5
        while not self.quit.is_set():
            psub: JetStreamContext.PullSubscription | None = None
            started = time.monotonic()
            try:
                psub = await self._bind_waiting()
                if psub is None:
                    if self.quit.is_set():
                        return
                    self.log.warning(
                        "no log stream: writing from a plain subscription; events published "
                        "while this operator is down will be lost",
                        stream=self.stream,
                        waited_s=self.settings.stream_wait,
                    )
                    psub = await self._consume_core(recheck=True)
                    if psub is None:
                        return
                    self.log.info("log stream found: reading it", stream=self.stream)
                await self._consume_stream(psub)  # returns once stopping
            except Exception as exc:
                if time.monotonic() - started > 60:
                    backoff = 0.5
                self.log.warning(
                    "log consumer failed: retrying", error=repr(exc), retry_in_s=backoff
                )
                await self._sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                if psub is not None:
                    with contextlib.suppress(Exception):
                        await psub.unsubscribe()

    # -- JetStream -----------------------------------------------------------------------------

    async def _bind(self) -> JetStreamContext.PullSubscription:
        """Bind the durable consumer (created if missing); raise :class:`_StreamMissing`."""
        js = self.nc.jetstream()
        try:
            info = await js.stream_info(self.stream)
        except (NotFoundError, NoRespondersError) as exc:
            raise _StreamMissing(self.stream) from exc
        config = ConsumerConfig(
            durable_name=DURABLE,
            description="eevee logging operator: log events written to files",
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT,
            max_ack_pending=MAX_ACK_PENDING,
            filter_subject=self.subject,
        )
        # Where a consumer created now starts (an existing one goes on where it was):
        if self.acked_seq and info.created is not None and info.created == self.stream_created:
            # the same stream lost our consumer: go on after what was written
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = self.acked_seq + 1
        elif self.from_subscription:
            # what the stream holds came through the plain subscription already
            config.deliver_policy = DeliverPolicy.NEW
        if info.created != self.stream_created:
            self.stream_created, self.acked_seq = info.created, 0
        psub = await js.pull_subscribe(
            self.subject, durable=DURABLE, stream=self.stream, config=config
        )
        self.from_subscription = False
        return psub

    async def _bind_waiting(self) -> JetStreamContext.PullSubscription | None:
        """Bind, waiting up to ``stream_wait`` seconds for the stream; None if it never came."""
        deadline = time.monotonic() + self.settings.stream_wait
        while True:
            try:
                return await self._bind()
            except _StreamMissing:
                if time.monotonic() >= deadline or self.quit.is_set():
                    return None
                await self._sleep(min(0.25, max(deadline - time.monotonic(), 0.0)))

    async def _consume_stream(self, psub: JetStreamContext.PullSubscription) -> None:
        """Fetch, write, acknowledge every message, until stopped; raise on consumer errors."""
        idle = 0.0
        try:
            while await self._until_resumed():
                try:
                    msgs = await psub.fetch(FETCH_BATCH, timeout=FETCH_TIMEOUT)
                except TimeoutError:  # nothing new (nats' TimeoutError is one too)
                    idle += FETCH_TIMEOUT
                    if idle >= CONSUMER_CHECK:
                        idle = 0.0
                        await psub.consumer_info()  # NotFoundError if deleted: rebind
                    continue
                idle = 0.0
                if self.svc.halted:  # halted during the fetch: give them back for later
                    for msg in msgs:
                        await msg.nak()
                    continue
                await self._handle(msgs)
        finally:
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=1)  # the acks reach the server before we go

    async def _handle(self, msgs: list[Msg]) -> None:
        result = await self.svc.write([(m.subject, m.data) for m in msgs])
        failed = set(result.failed)
        for index, msg in enumerate(msgs):
            # Every message is acknowledged (invalid ones too, or they would come back
            # forever); only those that could not be written are sent back for later.
            if index in failed:
                await msg.nak(delay=RETRY_DELAY)
            else:
                await msg.ack()
        if not failed:
            with contextlib.suppress(Exception):  # only for a consumer lost and created again
                self.acked_seq = max(self.acked_seq, msgs[-1].metadata.sequence.stream)

    # -- the plain subscription ----------------------------------------------------------------

    async def _consume_core(self, *, recheck: bool) -> JetStreamContext.PullSubscription | None:
        """Write from a plain subscription until stopped, or until the stream exists (then
        return its bound consumer; the subscription ends only after the consumer is bound)."""
        queue: deque[tuple[str, bytes]] = deque()
        svc = self.svc

        async def received(msg: Msg) -> None:
            if len(queue) >= CORE_QUEUE_LIMIT:
                svc.counts.dropped += 1
                return
            queue.append((msg.subject, msg.data))
            self.wake.set()

        sub = await self.nc.subscribe(self.subject, cb=received)
        next_check = time.monotonic() + STREAM_RECHECK
        self.from_subscription = recheck
        try:
            while not self.quit.is_set():
                if queue and not svc.halted:
                    batch = [queue.popleft() for _ in range(min(len(queue), 4 * FETCH_BATCH))]
                    await svc.write(batch)
                    continue
                self.wake.clear()
                wait = next_check - time.monotonic() if recheck else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), wait)
                if recheck and time.monotonic() >= next_check:
                    next_check = time.monotonic() + STREAM_RECHECK
                    try:
                        return await self._bind()
                    except _StreamMissing:
                        pass
                    except Exception as exc:
                        self.log.warning("cannot bind the log stream", error=repr(exc))
            return None
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if queue:  # received already: write it rather than lose it
                with contextlib.suppress(Exception):
                    await svc.write(list(queue))


def create() -> Operator[LoggingSettings]:
    """Build the logging operator (nothing runs until ``run()`` or ``serve()``)."""
    op = Operator(LoggingSettings, operator_id="logging", name="logging")
    op.drain_timeout = 1.0  # only pings and control go through the ipc layer
    op.stop_timeout = FETCH_TIMEOUT + 2.0  # the fetch in hand, its batch, closing the files
    svc = _Service(op)

    @op.on_start
    async def start() -> None:
        await svc.start()

    @op.on_reload
    async def reload() -> None:
        await svc.reload()

    @op.on_halt
    def halt() -> None:
        svc.halt()

    @op.on_resume
    def resume() -> None:
        svc.resume()

    @op.on_stop
    async def stop() -> None:
        await svc.stop(FETCH_TIMEOUT + 1.0)

    return op


def main() -> None:
    """Run the logging operator as a process."""
    create().run()


if __name__ == "__main__":
    main()
