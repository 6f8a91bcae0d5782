"""The running logging operator: its files, its source of events, the ids it knows."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

from eeveepy.logs import SUPERVISOR_SOURCE, stream_name
from eeveepy.runtime.operator import Operator

from .files import BatchResult, LogFiles, Pruned
from .known import ASK_AGAIN, STATE_FILE, KnownIds, ask_supervisors
from .report import REPORT_INTERVAL, Reporter
from .settings import LoggingSettings
from .source import FETCH_TIMEOUT, Source

PRUNE_INTERVAL: Final = 3600.0
"""Seconds between deletions of old files."""
MAINTAIN_INTERVAL: Final = 5.0
"""Seconds between looks at what is due: warnings, asks, pruning."""

T = TypeVar("T")


class Service:
    """The state of a running logging operator: its files, its consumer, its counters."""

    def __init__(self, op: Operator[LoggingSettings]) -> None:
        self.op = op
        self.files: LogFiles | None = None
        self.reporter = Reporter(op.log)
        self.counts = self.reporter.counts
        self.known = KnownIds((), forget_after=0.0)
        self.halted = False
        self.stopping = False  # no more asks: the batch in hand is written without waiting
        self.source: Source | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_error_log = 0.0
        self._last_ask = -ASK_AGAIN
        self._asking = asyncio.Lock()

    # -- the worker thread -------------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` on the file thread: file operations never run concurrently."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="logging-files")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open_files(self) -> LogFiles:
        settings = self.op.settings
        files: LogFiles = await self.run(_open_files, settings, self.op.data_dir, self.op.id)
        self.reporter.max_total_bytes = settings.max_total_bytes
        return files

    async def write(self, items: Sequence[tuple[str, bytes]]) -> BatchResult:
        """Write a batch through the current files; count it; report problems (rate-limited)."""
        files = self.files
        assert files is not None
        if (
            not self.stopping
            and time.monotonic() - self._last_ask >= ASK_AGAIN
            and self._names_unknown_id(items)
        ):
            await self.ask()  # an operator just added may be among them
        result: BatchResult = await self.run(files.write_batch, items, self.known.current)
        self.reporter.add(result)
        if result.error is not None:
            now = time.monotonic()
            if now - self._last_error_log >= REPORT_INTERVAL:
                self._last_error_log = now
                self.op.log.error(
                    "cannot write log files", error=result.error, directory=str(files.directory)
                )
        self.reporter.report()
        return result

    def _names_unknown_id(self, items: Sequence[tuple[str, bytes]]) -> bool:
        """Whether a subject names an id not known (the file goes by the record's operator
        field, which matches the subject's id unless someone lies)."""
        head = f"{self.op.subjects.prefix}.log."
        known = self.known.current
        return any(s[len(head) :].partition(".")[2] not in known for s, _ in items)

    async def prune(self) -> None:
        files = self.files
        if files is not None:
            pruned: Pruned = await self.run(files.prune)
            self.counts.add_pruned(pruned)
            if pruned.old:
                self.op.log.info("old log files deleted", count=pruned.old)
            self.reporter.report()

    # -- the ids -----------------------------------------------------------------------------

    def configure_known(self) -> None:
        settings = self.op.settings
        fixed = {SUPERVISOR_SOURCE, self.op.id, *settings.operators}
        self.known.configure(fixed, forget_after=settings.forget_after)

    async def load_known(self) -> None:
        self.configure_known()
        problem = await self.run(self.known.load, self.op.data_dir / STATE_FILE)
        if problem is not None:
            self.op.log.warning("cannot read the known operator ids: asking anew", error=problem)

    async def ask(self) -> None:
        """Ask the supervisors which ids are configured; keep the ids if nobody answers."""
        async with self._asking:
            self._last_ask = time.monotonic()
            try:
                answers = await ask_supervisors(self.op.ipc)
            except Exception as exc:
                self.op.log.debug("cannot ask the supervisors", error=repr(exc))
                return
            if self.known.update(answers, time.time()):
                path: Path = self.op.data_dir / STATE_FILE
                try:
                    await self.run(KnownIds.save, path, self.known.snapshot())
                except OSError as exc:
                    self.op.log.warning("cannot save the known operator ids", error=str(exc))

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.load_known()
        await self.ask()
        self.files = await self.open_files()
        await self.prune()
        self.start_source()
        self._spawn(self._maintain())
        settings = self.op.settings
        self.op.log.info(
            "writing log files",
            directory=str(self.files.directory),
            stream=stream_name(self.op.subjects.prefix) if settings.stream else None,
            known_ids=len(self.known.current),
        )

    def start_source(self) -> None:
        self.source = Source(self, self.op.ipc.nc, self.op.settings)
        self.source.task = self._spawn(self.source.run())

    async def stop_source(self, timeout: float) -> None:
        source, self.source = self.source, None
        if source is not None:
            await source.stop(timeout)

    async def reload(self) -> None:
        """Reopen the files (the directory may have changed), rebind if ``stream`` changed."""
        self.configure_known()
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
        self.stopping = True
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
            unknown=c.unknown + c.over_ids,
            failed=c.failed,
            dropped=c.dropped,
            pruned=c.pruned_files,
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
        """Sum up problems (rate-limited), ask the supervisors, prune old files, when due."""
        last_prune = time.monotonic()
        while True:
            await asyncio.sleep(MAINTAIN_INTERVAL)
            with contextlib.suppress(Exception):
                self.reporter.report()
                now = time.monotonic()
                if now - self._last_ask >= self.op.settings.supervisor_refresh:
                    await self.ask()
                if now - last_prune >= PRUNE_INTERVAL:
                    last_prune = now
                    await self.prune()


def _open_files(settings: LoggingSettings, data_dir: Path, receiver: str) -> LogFiles:
    return LogFiles.open(settings, data_dir=data_dir, receiver=receiver)


def create() -> Operator[LoggingSettings]:
    """Build the logging operator (nothing runs until ``run()`` or ``serve()``)."""
    op = Operator(LoggingSettings, operator_id="logging", name="logging")
    op.drain_timeout = 1.0  # only pings and control go through the ipc layer
    op.stop_timeout = FETCH_TIMEOUT + 2.0  # the fetch in hand, its batch, closing the files
    svc = Service(op)

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
