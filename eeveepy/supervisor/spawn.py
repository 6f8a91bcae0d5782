"""Starting an operator's process and relaying its output.

:class:`Launcher` starts ``module`` operators from the preloaded fork server (started on first
use, and not tried again for 30 s after it failed to start) and everything else, or
everything when the fork server is off or broken, as a fresh process of its own session.
The fork server is renewed when a directory it imports from has changed since it started (a
package installed with pip adds files there, and its ``.pth`` file is read only by a new
interpreter): new operators start from the new one, and the old one stays until its last
child has ended (its children die with it).
Before each start the operator's cache directory is emptied, off the event loop: a large
cache must not stall the pings of every other operator.

:class:`OutputRelay` turns the child's stdout and stderr into log records, line by line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import psutil
import structlog
from structlog.typing import FilteringBoundLogger

from eeveepy.aio import die_with_parent
from eeveepy.config import OperatorConfig
from eeveepy.errors import ForkServerError
from eeveepy.logs import record_from_line, relay_record
from eeveepy.protocol.models import LogRecord
from eeveepy.supervisor.forkserver import ForkServer
from eeveepy.supervisor.prefork import PreForked

__all__ = [
    "Child",
    "Launcher",
    "OutputRelay",
    "empty_dir",
    "renice",
    "track",
    "usage",
    "write_settings",
]

FORKSERVER_RETRY = 30.0
"""Seconds after a failed start of the fork server before it is tried again."""
MAX_LINE = 16384
"""Longer output lines are cut into pieces of this many bytes."""


class Child(Protocol):
    """What the supervisor needs of a process: asyncio's Process, or a forked child."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    stdout: asyncio.StreamReader | None
    stderr: asyncio.StreamReader | None

    async def wait(self) -> int: ...

    def send_signal(self, signal: int) -> None: ...


class Launcher:
    """Starts operator processes; owns the fork server (see the module docstring)."""

    def __init__(
        self, *, forkserver: bool, log: FilteringBoundLogger, forked: PreForked | None = None
    ) -> None:
        self.use_forkserver = forkserver
        self._log = log
        self._forked = forked  # the first server, pre-forked (see prefork.py), if any
        self._fork: ForkServer | None = None
        self._lock = asyncio.Lock()
        self._failed_at = -FORKSERVER_RETRY
        self._warm: asyncio.Task[ForkServer | None] | None = None
        self._stamp: dict[str, int] = {}
        self._retired: list[ForkServer] = []

    def warm(self) -> None:
        """Start the fork server in the background (it preloads while the bus starts)."""
        if self.use_forkserver and self._warm is None:
            self._warm = asyncio.ensure_future(self.forkserver())

    async def forkserver(self) -> ForkServer | None:
        """The running fork server, started on first use; None when off or broken."""
        if not self.use_forkserver:
            return None
        async with self._lock:
            await self._stop_retired()
            if self._fork is not None and self._fork.running:
                if _stamp(self._fork.path) == self._stamp:
                    return self._fork
                self._log.info("packages changed since the fork server started: renewing it")
                self._retired.append(self._fork)
                self._fork = None
            if time.monotonic() - self._failed_at < FORKSERVER_RETRY:
                return None
            server = ForkServer()
            forked, self._forked = self._forked, None
            try:
                await server.start(forked=forked)
            except ForkServerError as exc:
                self._failed_at = time.monotonic()
                self._log.warning(
                    "no fork server: operators start as fresh processes", error=str(exc)
                )
                return None
            self._fork = server
            self._stamp = _stamp(server.path)
            return server

    async def _stop_retired(self) -> None:
        """Stop the renewed fork servers whose children have all ended."""
        for server in [s for s in self._retired if not s.busy]:
            self._retired.remove(server)
            await server.stop()

    async def spawn(
        self, cfg: OperatorConfig, env: dict[str, str], cache_dir: Path, log: FilteringBoundLogger
    ) -> Child:
        """Empty ``cache_dir``, then start ``cfg``'s process with ``env`` over ours.

        Raises :class:`OSError` when the process cannot be started.
        """
        await asyncio.to_thread(empty_dir, cache_dir)
        full_env = {**os.environ, **env, **cfg.env}
        server = await self.forkserver() if cfg.module else None
        child: Child | None = None
        if server is not None and cfg.module:
            try:
                child = await server.spawn(cfg.module, [], full_env, cwd=os.getcwd())
            except ForkServerError as exc:
                log.warning("fork server failed; starting a fresh interpreter", error=str(exc))
        if child is None:
            child = await self._fresh(cfg, full_env)
        if cfg.nice:
            renice(child.pid, cfg.nice, log)
        return child

    async def _fresh(self, cfg: OperatorConfig, full_env: dict[str, str]) -> Child:
        """``cfg``'s process as a fresh interpreter (or executable) of its own session."""
        return await asyncio.create_subprocess_exec(
            *cfg.argv(sys.executable),
            env=full_env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            # Built here, on the event loop's thread: the child dies with the thread that
            # forked it, and this one lives as long as the supervisor.
            preexec_fn=die_with_parent(),
        )

    async def stop(self) -> None:
        """Stop the fork server (its children die with it). Idempotent."""
        forked, self._forked = self._forked, None
        if forked is not None:  # never taken over
            forked.close()
        warm, self._warm = self._warm, None
        if warm is not None:
            warm.cancel()
            # Whatever the warm-up ran into, shutdown goes on (a failed start was logged).
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await warm
        if self._fork is not None:
            await self._fork.stop()
            self._fork = None
        retired, self._retired = self._retired, []
        for server in retired:
            await server.stop()


class OutputRelay:
    """Relays a child's output as log records, to ``ship`` and to the supervisor's log."""

    def __init__(self, op_id: str, ship: Callable[[LogRecord], None]) -> None:
        self.op_id = op_id
        self._ship = ship
        self._relay = structlog.get_logger("eeveepy.operator")
        self._readers: list[asyncio.Task[None]] = []

    def follow(self, child: Child) -> None:
        """Relay ``child``'s stdout and stderr until they close (an earlier child's no more)."""
        for task in self._readers:
            task.cancel()
        self._readers = [
            asyncio.ensure_future(self._pump(child.stdout, "stdout")),
            asyncio.ensure_future(self._pump(child.stderr, "stderr")),
        ]

    async def _pump(
        self, stream: asyncio.StreamReader | None, name: Literal["stdout", "stderr"]
    ) -> None:
        if stream is None:
            return
        buf = b""
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                if buf:
                    self._emit(buf, name)
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                self._emit(line, name)
            while len(buf) > MAX_LINE:
                self._emit(buf[:MAX_LINE], name)
                buf = buf[MAX_LINE:]

    def _emit(self, line: bytes, stream: Literal["stdout", "stderr"]) -> None:
        text = line.decode("utf-8", errors="replace").rstrip("\r")
        if not text:
            return
        record = record_from_line(self.op_id, text, stream)
        self._ship(record)
        relay_record(record, self._relay)


def _stamp(path: list[str]) -> dict[str, int]:
    """When each directory of ``path`` last changed (absent ones left out)."""
    stamp = {}
    for entry in path:
        with contextlib.suppress(OSError):
            info = os.stat(entry or ".")
            stamp[entry] = info.st_mtime_ns
    return stamp


def renice(pid: int, nice: int, log: FilteringBoundLogger) -> None:
    """Make process ``pid`` (every thread it has, and so every one it starts) run at niceness
    ``nice``, never below the supervisor's own. A failure is logged; the process runs on."""
    nice = max(nice, os.getpriority(os.PRIO_PROCESS, 0))
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)  # on Linux: its main thread
        # Threads it started before that keep their niceness on Linux: each is set too (a
        # thread started after it inherits the main thread's).
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                if int(tid) != pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.setpriority(os.PRIO_PROCESS, int(tid), nice)
    except OSError as exc:
        log.warning("cannot set the niceness of the operator's process", nice=nice, error=str(exc))


def empty_dir(path: Path) -> None:
    """Create ``path`` empty (blocking: run it in a thread). Symlinks in it are removed, never
    followed."""
    if path.exists():
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)


def write_settings(path: Path, settings: dict[str, Any]) -> None:
    """Write the settings JSON an operator re-reads on SIGHUP (0600: it may hold secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(settings, f)
    tmp.replace(path)


def track(pid: int) -> psutil.Process | None:
    """A handle to measure process ``pid`` by (its CPU counter started), or None."""
    try:
        ps = psutil.Process(pid)
        ps.cpu_percent(interval=None)
    except psutil.Error:
        return None
    return ps


def usage(ps: psutil.Process | None) -> tuple[int | None, float | None, int | None]:
    """Resident memory (bytes), CPU (percent since the last call) and niceness of ``ps``, if
    known."""
    if ps is None:
        return None, None, None
    try:
        with ps.oneshot():
            return ps.memory_info().rss, ps.cpu_percent(interval=None), ps.nice()
    except psutil.Error:
        return None, None, None
