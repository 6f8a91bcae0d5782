"""One supervised operator: its process, its state machine, its health checks.

States follow supervisord's vocabulary::

    STOPPED --start--> STARTING --ready--> RUNNING <--halt/resume--> HALTED
                          |                   |
                   exit / no ready      exit / hung (missed pings)
                          v                   v
                       BACKOFF --delay--> STARTING        (or FATAL when flapping,
                                                          EXITED when the policy says no)
    any --stop--> STOPPING --> STOPPED
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol

import psutil
import structlog

from eeveepy.aio import Backoff, cancel_and_wait, die_with_parent
from eeveepy.bus.ipc import Ipc
from eeveepy.config import OperatorConfig, RestartPolicy
from eeveepy.errors import BusError
from eeveepy.logs import record_from_line, relay_record
from eeveepy.protocol.models import (
    Control,
    ControlAction,
    ControlResult,
    Health,
    LogRecord,
    OperatorStatus,
    Ping,
    Pong,
)
from eeveepy.runtime.contract import EXIT_CONFIG
from eeveepy.supervisor.forkserver import ForkServer, ForkServerError


class State(StrEnum):
    """Lifecycle states of a supervised operator."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    HALTED = "HALTED"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    EXITED = "EXITED"
    FATAL = "FATAL"


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


class BusHealth(Protocol):
    """The supervisor's view of its own bus connection (see :class:`eeveepy.buswatch.BusWatch`)."""

    @property
    def connected(self) -> bool: ...

    def settled(self) -> bool:
        """Connected long enough for a missed ping to say something about the operator."""
        ...


LeaseFn = Callable[[str], Awaitable[str | None]]
"""Try to hold the lease of an operator id; returns None when held, else the holder's name."""


class OperatorProcess:
    """Runs one operator under supervision until :meth:`close`."""

    def __init__(
        self,
        cfg: OperatorConfig,
        *,
        ipc: Ipc,
        env: dict[str, str],
        settings_file: Path,
        cache_dir: Path,
        acquire_lease: LeaseFn,
        release_lease: Callable[[str], Awaitable[None]],
        on_change: Callable[[OperatorProcess], None] | None = None,
        on_log: Callable[[LogRecord], None] | None = None,
        forkserver: Callable[[], Awaitable[ForkServer | None]] | None = None,
        bus: BusHealth | None = None,
    ) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.state = State.STOPPED
        self.message = ""
        self.pid: int | None = None
        self.restarts = 0
        self.ping_ms: float | None = None
        self.health: Health | None = None  # as the last pong said
        self.problem = ""
        self.started_at: float | None = None
        self._ipc = ipc
        self._env = env
        self._settings_file = settings_file
        self._cache_dir = cache_dir
        self._acquire_lease = acquire_lease
        self._release_lease = release_lease
        self._on_change = on_change
        self._on_log = on_log
        self._relay = structlog.get_logger("eeveepy.operator")
        self._forkserver = forkserver
        self._bus = bus
        self._log = structlog.get_logger("eeveepy.supervisor").bind(operator=cfg.id)
        self._proc: Child | None = None
        self._ps: psutil.Process | None = None
        self._want_running = False
        self._restart_requested = False
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._early_ready: set[int] = set()
        self._backoff = Backoff(cfg.backoff_initial, cfg.backoff_max)
        self._failures: deque[float] = deque()
        self._task: asyncio.Task[None] | None = None
        self._readers: list[asyncio.Task[None]] = []
        self.write_settings()

    # -- control (called by the supervisor) ------------------------------------------------

    def start(self) -> None:
        """Run the operator (again), clearing FATAL."""
        self._want_running = True
        self._failures.clear()
        self._backoff.reset()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._lifecycle(), name=f"operator:{self.id}"
            )
        self._wake.set()

    def stop(self) -> None:
        """Stop the operator; it stays STOPPED until started."""
        self._want_running = False
        self._wake.set()

    def restart(self) -> None:
        """Stop and start again at once (no backoff, not counted as a failure)."""
        if not self._want_running or self.state in (State.FATAL, State.EXITED, State.STOPPED):
            self.start()
            return
        self._restart_requested = True
        self._wake.set()

    async def wait_stopped(self, timeout: float) -> None:
        """Wait (bounded) until the process is gone."""
        deadline = time.monotonic() + timeout
        while self._proc is not None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    async def halt(self) -> ControlResult:
        """Ask the operator to pause handling messages."""
        return await self._control(ControlAction.HALT, State.HALTED)

    async def resume(self) -> ControlResult:
        """Ask the operator to handle messages again."""
        return await self._control(ControlAction.RESUME, State.RUNNING)

    def reload(self) -> bool:
        """Rewrite the settings file and send SIGHUP; False when not running."""
        self.write_settings()
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGHUP)
        return True

    def update_config(self, cfg: OperatorConfig, env: dict[str, str] | None = None) -> None:
        """Take a new configuration (the caller decides between reload and restart)."""
        self.cfg = cfg
        if env is not None:
            self._env = env
        self._backoff = Backoff(cfg.backoff_initial, cfg.backoff_max)
        self.write_settings()

    def write_settings(self) -> None:
        """Write the settings JSON the operator re-reads on SIGHUP (0600: it may hold secrets)."""
        self._settings_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._settings_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.cfg.settings, f)
        tmp.replace(self._settings_file)

    def mark_ready(self, pid: int) -> None:
        """Process ``pid`` announced it is ready (it may beat the spawn call's return)."""
        if pid == self.pid:
            self._ready.set()
        elif self.pid is None and self.state == State.STARTING:
            self._early_ready.add(pid)

    async def close(self, timeout: float) -> None:
        """Stop the process (bounded) and end the lifecycle task."""
        self._want_running = False
        self._wake.set()
        await self._terminate(timeout)
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        with contextlib.suppress(Exception):
            await self._release_lease(self.id)

    def kill_now(self) -> None:
        """SIGKILL the process group at once (forced shutdown)."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def send_term(self) -> None:
        """SIGTERM the process group, without waiting."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)

    # -- status ----------------------------------------------------------------------------

    def status(self) -> OperatorStatus:
        """A snapshot for ``eevee ps``."""
        rss = cpu = None
        if self._ps is not None:
            try:
                with self._ps.oneshot():
                    rss = self._ps.memory_info().rss
                    cpu = self._ps.cpu_percent(interval=None)
            except psutil.Error:
                pass
        uptime = time.monotonic() - self.started_at if self.started_at and self.pid else None
        return OperatorStatus(
            id=self.id,
            state=self.state.value,
            pid=self.pid,
            restarts=self.restarts,
            uptime_s=round(uptime, 3) if uptime is not None else None,
            rss_bytes=rss,
            cpu_percent=cpu,
            ping_ms=round(self.ping_ms, 3) if self.ping_ms is not None else None,
            message=self.message,
            health=self.health,
            problem=self.problem,
        )

    # -- internals -------------------------------------------------------------------------

    def _set(self, state: State, message: str = "") -> None:
        if state != self.state or message != self.message:
            self.state = state
            self.message = message
            if message:
                self._log.info(f"{state.value}: {message}", state=state.value)
            else:
                self._log.info(state.value, state=state.value)
            if self._on_change:
                self._on_change(self)

    def _note_health(self, pong: Pong) -> None:
        if (pong.health, pong.problem) == (self.health, self.problem):
            return
        if pong.health is Health.DEGRADED and self.health is not Health.DEGRADED:
            self._log.warning("degraded", problem=pong.problem)
        elif self.health is Health.DEGRADED and pong.health is not Health.DEGRADED:
            self._log.info("healthy again")
        self.health, self.problem = pong.health, pong.problem
        if self._on_change:
            self._on_change(self)

    async def _control(self, action: ControlAction, new_state: State) -> ControlResult:
        if self.state not in (State.RUNNING, State.HALTED) or self._proc is None:
            return ControlResult(ok=False, message=f"{self.id} is {self.state.value}")
        try:
            reply = await self._ipc.request(
                self._ipc.subjects.operator_ctl(self.id),
                Control(action=action, target=self.id),
                ControlResult,
                timeout=self.cfg.ping_timeout,
            )
        except BusError as exc:
            return ControlResult(ok=False, message=f"{self.id} did not accept {action}: {exc}")
        if reply.body.ok:
            self._set(new_state)
        return reply.body

    async def _lifecycle(self) -> None:
        while True:
            if not self._want_running:
                if self.state not in (State.FATAL, State.EXITED):
                    self._set(State.STOPPED, self.message if self.state == State.STOPPED else "")
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._bus is not None and not self._bus.connected:
                # Started now, it could not connect, or its ready would reach nobody.
                self._set(State.BACKOFF, "waiting for the bus to come back")
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=0.1)
                continue
            holder = await self._acquire_lease(self.id)
            if holder is not None:
                self._set(State.STOPPED, f"waiting: {holder} runs it")
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                continue
            try:
                outcome = await self._run_once()
                await self._after(outcome)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug of ours must not leave the operator unsupervised
                with contextlib.suppress(Exception):
                    self._log.exception("supervision failed; retrying", error=repr(exc))
                with contextlib.suppress(Exception):
                    await self._terminate(self.cfg.stop_timeout)
                self._proc = None
                self.pid = None
                self.message = f"internal error: {exc!r}"
                await asyncio.sleep(1.0)

    async def _run_once(self) -> str:
        """Spawn, wait for ready, supervise; returns why it ended."""
        self._ready.clear()
        self._restart_requested = False
        self._wake.clear()
        self._set(State.STARTING)
        try:
            await self._spawn()
        except OSError as exc:
            self.message = f"cannot start: {exc}"
            return "spawn-failed"
        assert self._proc is not None
        exit_wait: asyncio.Future[Any] = asyncio.ensure_future(self._proc.wait())
        ready_wait: asyncio.Future[Any] = asyncio.ensure_future(self._ready.wait())
        wake_wait: asyncio.Future[Any] = asyncio.ensure_future(self._wake.wait())
        try:
            done, _ = await asyncio.wait(
                {exit_wait, ready_wait, wake_wait},
                timeout=self.cfg.start_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            ready_wait.cancel()
            wake_wait.cancel()
        if exit_wait in done:
            return "exited"
        if wake_wait in done and not self._ready.is_set():
            await self._terminate(self.cfg.stop_timeout)
            return "requested"
        if not self._ready.is_set():
            self._log.warning("not ready in time", start_timeout=self.cfg.start_timeout)
            await self._terminate(self.cfg.stop_timeout)
            self.message = f"not ready within {self.cfg.start_timeout:g} s"
            return "not-ready"
        self.started_at = time.monotonic()
        self._set(State.RUNNING)
        return await self._supervise(exit_wait)

    async def _supervise(self, exit_wait: asyncio.Future[Any]) -> str:
        missed = 0
        ping_subject = self._ipc.subjects.operator_ping(self.id)
        while True:
            if not self._want_running or self._restart_requested:
                await self._terminate(self.cfg.stop_timeout)
                return "requested"
            self._wake.clear()
            wake_wait: asyncio.Future[Any] = asyncio.ensure_future(self._wake.wait())
            try:
                done, _ = await asyncio.wait(
                    {exit_wait, wake_wait},
                    # On a grid shared by every operator with this interval: their pings go
                    # out together, so the client writes them in one syscall and the replies
                    # wake the supervisor once, not fifty times.
                    timeout=_until_next_tick(self.cfg.ping_interval),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                wake_wait.cancel()
            if exit_wait in done:
                return "exited"
            if not self._want_running or self._restart_requested:
                await self._terminate(self.cfg.stop_timeout)
                return "requested"
            if wake_wait in done:
                continue
            t0 = time.perf_counter()
            ping: asyncio.Future[Any] = asyncio.ensure_future(
                self._ipc.request(ping_subject, Ping(), Pong, timeout=self.cfg.ping_timeout)
            )
            self._wake.clear()
            woken: asyncio.Future[Any] = asyncio.ensure_future(self._wake.wait())
            try:
                done, _ = await asyncio.wait(
                    {exit_wait, ping, woken}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                woken.cancel()
            if exit_wait in done:
                ping.cancel()
                return "exited"
            if ping not in done:  # a stop or restart request: handled at the top of the loop
                ping.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await ping
                continue
            try:
                pong: Pong = ping.result().body
                self.ping_ms = (time.perf_counter() - t0) * 1000
                missed = 0
                self._note_health(pong)
            except Exception as exc:
                if self._bus is not None and not self._bus.settled():
                    continue  # the supervisor's own connection is down or just back
                missed += 1
                self._log.warning("missed ping", missed=missed, error=str(exc))
                if missed >= self.cfg.max_missed_pings:
                    self._log.error("hung: restarting", missed=missed)
                    await self._terminate(self.cfg.stop_timeout)
                    # After _terminate: its STOPPING state would clear the message.
                    self.message = f"hung: {missed} pings missed"
                    return "hung"

    async def _after(self, outcome: str) -> None:
        proc = self._proc
        code = proc.returncode if proc is not None else None
        ran_for = time.monotonic() - self.started_at if self.started_at else 0.0
        if self.state in (State.RUNNING, State.HALTED) and ran_for >= self.cfg.healthy_after:
            self._backoff.reset()
            self._failures.clear()
        if proc is not None:
            # Whatever the operator left behind in its process group goes with it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self._proc = None
        self._ps = None
        self.pid = None
        self.ping_ms = None
        self.health, self.problem = None, ""
        if outcome == "requested" or not self._want_running:  # (it may exit as it is stopped)
            if self._restart_requested and self._want_running:
                self.restarts += 1
                return
            self._set(State.STOPPED)
            return
        if code == EXIT_CONFIG:  # the operator's settings are invalid: restarting will not help
            self._want_running = False
            self._set(State.FATAL, "invalid settings (exit 78): fix the config, then ctl start")
            return
        clean = code == 0 and outcome == "exited"
        policy = self.cfg.restart
        if policy == RestartPolicy.NEVER or (policy == RestartPolicy.ON_FAILURE and clean):
            self._want_running = False
            self._set(State.EXITED, f"exit code {code}")
            return
        now = time.monotonic()
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self.cfg.restart_window:
            self._failures.popleft()
        if len(self._failures) > self.cfg.max_restarts:
            self._want_running = False
            detail = self.message if outcome != "exited" else f"exit code {code}"
            self._set(
                State.FATAL,
                f"flapping: {len(self._failures)} restarts in {self.cfg.restart_window:g} s"
                f" (last: {detail}); `eevee ctl start {self.id}` to try again",
            )
            return
        delay = self._backoff.next()
        reason = self.message if outcome != "exited" else f"exit code {code}"
        self._set(State.BACKOFF, f"{reason}; restarting in {delay:.2f} s")
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=delay)
        if self._want_running:
            self.restarts += 1

    async def _spawn(self) -> None:
        _empty_dir(self._cache_dir)
        argv = self.cfg.argv(sys.executable)
        env = {**os.environ, **self._env, **self.cfg.env}
        proc: Child | None = None
        server = await self._forkserver() if self._forkserver and self.cfg.module else None
        if server is not None and self.cfg.module:
            try:
                proc = await server.spawn(self.cfg.module, [], env, cwd=os.getcwd())
            except ForkServerError as exc:
                self._log.warning(
                    "fork server failed; starting a fresh interpreter", error=str(exc)
                )
        if proc is None:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        self._proc = proc
        self.pid = proc.pid
        if proc.pid in self._early_ready:
            self._ready.set()
        self._early_ready.clear()
        self.started_at = time.monotonic()
        try:
            self._ps = psutil.Process(proc.pid)
            self._ps.cpu_percent(interval=None)
        except psutil.Error:
            self._ps = None
        for tasks in self._readers:
            tasks.cancel()
        self._readers = [
            asyncio.ensure_future(self._pump(proc.stdout, "stdout")),
            asyncio.ensure_future(self._pump(proc.stderr, "stderr")),
        ]
        self._log.info("spawned", pid=proc.pid, argv=argv)

    async def _pump(
        self, stream: asyncio.StreamReader | None, name: Literal["stdout", "stderr"]
    ) -> None:
        """Relay the operator's output line by line (long lines cut at 16 KiB)."""
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
            while len(buf) > 16384:
                self._emit(buf[:16384], name)
                buf = buf[16384:]

    def _emit(self, line: bytes, stream: Literal["stdout", "stderr"]) -> None:
        text = line.decode("utf-8", errors="replace").rstrip("\r")
        if not text:
            return
        record = record_from_line(self.id, text, stream)
        if self._on_log is not None:
            self._on_log(record)
        relay_record(record, self._relay)

    async def _terminate(self, timeout: float) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        self._set(State.STOPPING)
        self.send_term()
        try:
            await asyncio.wait_for(proc.wait(), timeout=timeout)
        except TimeoutError:
            self._log.warning("did not stop in time: SIGKILL", stop_timeout=timeout)
            self.kill_now()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=5)
        # Anything left in the operator's process group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def _empty_dir(path: Path) -> None:
    """Create ``path`` empty (the operator's cache dir is emptied at each start)."""
    if path.exists():
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                _rmtree(child)
            else:
                child.unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)


def _rmtree(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            _rmtree(child)
        else:
            child.unlink(missing_ok=True)
    path.rmdir()


def _until_next_tick(interval: float) -> float:
    """Seconds until the next multiple of ``interval`` on the monotonic clock."""
    return interval - (time.monotonic() % interval)
