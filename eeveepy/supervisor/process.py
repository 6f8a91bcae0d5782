"""One supervised operator: its process, its state machine, its health checks.

An :class:`OperatorProcess` runs one operator id until it is closed: it waits for the bus and
for the id's lease, starts the process, waits for its ``ready``, pings it every
``ping_interval``, and after each run follows the verdict of its restart policy. The states
and outcomes are :mod:`eeveepy.supervisor.states`; starting a process and relaying its output
is :mod:`eeveepy.supervisor.spawn`; the policy is :mod:`eeveepy.supervisor.restarts`.
Everything it needs of the supervisor is one :class:`ProcessHost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Collection
from typing import Any

import psutil
import structlog
from structlog.typing import FilteringBoundLogger

from eeveepy.aio import cancel_and_wait
from eeveepy.bus.ipc import Ipc
from eeveepy.config import OperatorConfig
from eeveepy.errors import BusError
from eeveepy.paths import OperatorPaths
from eeveepy.protocol.models import Control, ControlAction, ControlResult, OperatorStatus
from eeveepy.supervisor.host import ProcessHost
from eeveepy.supervisor.pings import Pinger
from eeveepy.supervisor.restarts import Restarts
from eeveepy.supervisor.spawn import Child, OutputRelay, track, usage, write_settings
from eeveepy.supervisor.states import RESTING, Outcome, ProcessState

__all__ = ["OperatorProcess"]

_RUNNING = (ProcessState.RUNNING, ProcessState.HALTED)


class OperatorProcess:
    """Runs one operator under supervision until :meth:`close`."""

    def __init__(
        self,
        cfg: OperatorConfig,
        *,
        ipc: Ipc,
        host: ProcessHost,
        paths: OperatorPaths,
        env: dict[str, str],
    ) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.paths = paths
        self.state = ProcessState.STOPPED
        self.message = ""
        self.pid: int | None = None
        self.restarts = 0
        self.started_at: float | None = None
        self._ipc = ipc
        self._host = host
        self._env = env
        self._log: FilteringBoundLogger = structlog.get_logger("eeveepy.supervisor").bind(
            operator=cfg.id
        )
        self._relay = OutputRelay(cfg.id, host.ship)
        self._pings = Pinger(ipc, cfg.id, self._log)
        self._proc: Child | None = None
        self._ps: psutil.Process | None = None
        self._want_running = False
        self._restart_requested = False
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._early_ready: set[int] = set()
        self._policy = Restarts(cfg)
        self._task: asyncio.Task[None] | None = None
        self._waiters: list[tuple[Collection[ProcessState], asyncio.Future[None]]] = []
        self._termed: int | None = None  # the pid already sent SIGTERM
        self._hung = False
        self._watched = False  # pinged by the host

    # -- control (called by the supervisor) ------------------------------------------------

    def start(self) -> None:
        """Run the operator (again), clearing FATAL."""
        self._want_running = True
        self._policy.reset()
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
        if not self._want_running or self.state in (*RESTING, ProcessState.STOPPED):
            self.start()
            return
        self._restart_requested = True
        self._wake.set()

    async def halt(self) -> ControlResult:
        """Ask the operator to pause handling messages."""
        return await self._control(ControlAction.HALT, ProcessState.HALTED)

    async def resume(self) -> ControlResult:
        """Ask the operator to handle messages again."""
        return await self._control(ControlAction.RESUME, ProcessState.RUNNING)

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
        self._policy.reconfigure(cfg)
        self.write_settings()
        if self._watched:  # the new ping interval and limits from the next round
            self._host.unwatch(self._pings)
            self._host.watch(self._pings, cfg, self._on_hung)

    def write_settings(self) -> None:
        """Write the settings file the operator re-reads on SIGHUP."""
        write_settings(self.paths.settings_file, self.cfg.settings)

    def _prepare(self) -> None:
        """The data directory and the settings file, before each start (in a thread: at
        hundreds of operators the disk held up the supervisor's start)."""
        self.paths.data_dir.mkdir(parents=True, exist_ok=True)
        self.write_settings()

    def mark_ready(self, pid: int) -> None:
        """Process ``pid`` announced it is ready (it may beat the spawn call's return)."""
        if pid == self.pid:
            self._ready.set()
        elif self.pid is None and self.state == ProcessState.STARTING:
            self._early_ready.add(pid)

    async def wait_state(self, states: Collection[ProcessState], timeout: float) -> bool:
        """Wait (bounded) until the state is one of ``states``; False when it did not come."""
        if self.state in states:
            return True
        waiter = asyncio.get_running_loop().create_future()
        entry = (states, waiter)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return False
        finally:
            self._waiters.remove(entry)
        return True

    async def close(self, timeout: float) -> None:
        """Stop the process (bounded) and end the lifecycle task."""
        self._want_running = False
        self._wake.set()
        await self._terminate(timeout)
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        await self._host.release_lease(self.id)

    def kill_now(self) -> None:
        """SIGKILL the process group at once (forced shutdown)."""
        self._signal_group(signal.SIGKILL)

    def send_term(self) -> None:
        """SIGTERM the process group once, without waiting.

        Once per process: the runtime takes a second SIGTERM as "force the stop", and a
        shutdown reaches each operator by several paths (the shutdown itself, its close, the
        lifecycle's own stop).
        """
        proc = self._proc
        if proc is None or proc.pid == self._termed:
            return
        self._termed = proc.pid
        self._signal_group(signal.SIGTERM)

    def status(self) -> OperatorStatus:
        """A snapshot for ``eevee ps``."""
        rss, cpu, nice = usage(self._ps)
        uptime = time.monotonic() - self.started_at if self.started_at and self.pid else None
        ping_ms = self._pings.ping_ms
        return OperatorStatus(
            id=self.id,
            state=self.state.value,
            pid=self.pid,
            restarts=self.restarts,
            uptime_s=round(uptime, 3) if uptime is not None else None,
            rss_bytes=rss,
            cpu_percent=cpu,
            nice=nice,
            ping_ms=round(ping_ms, 3) if ping_ms is not None else None,
            message=self.message,
            health=self._pings.health,
            problem=self._pings.problem,
        )

    # -- internals -------------------------------------------------------------------------

    def _signal_group(self, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)

    def _set(self, state: ProcessState, message: str = "", *, level: str = "info") -> None:
        if state == self.state and message == self.message:
            return
        self.state, self.message = state, message
        event = f"{state.value}: {message}" if message else state.value
        getattr(self._log, level)(event, state=state.value)
        for states, waiter in self._waiters:
            if state in states and not waiter.done():
                waiter.set_result(None)

    async def _control(self, action: ControlAction, new_state: ProcessState) -> ControlResult:
        if self.state not in _RUNNING or self._proc is None:
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

    async def _woken_or(self, *aws: asyncio.Future[Any], timeout: float | None = None) -> bool:
        """Wait until one of ``aws`` is done, a control request wakes us, or ``timeout``
        passes; True when woken."""
        wake: asyncio.Future[Any] = asyncio.ensure_future(self._wake.wait())
        try:
            done, _ = await asyncio.wait(
                {*aws, wake}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            wake.cancel()
        return wake in done

    async def _lifecycle(self) -> None:
        while True:
            if not self._want_running:
                if self.state not in RESTING:
                    same = self.state == ProcessState.STOPPED
                    self._set(ProcessState.STOPPED, self.message if same else "")
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._host.bus.connected:
                # Started now, it could not connect, or its ready would reach nobody.
                self._set(ProcessState.BACKOFF, "waiting for the bus to come back", level="warning")
                self._wake.clear()
                await self._woken_or(timeout=0.1)
                continue
            holder = await self._host.acquire_lease(self.id)
            if holder is not None:
                self._set(ProcessState.STOPPED, f"waiting: {holder} runs it")
                self._wake.clear()
                await self._woken_or(timeout=1.0)
                continue
            try:
                await self._after(await self._run_once())
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

    async def _run_once(self) -> Outcome:
        """Spawn, wait for ready, supervise; returns why it ended."""
        self._ready.clear()
        self._restart_requested = False
        self._wake.clear()
        self._set(ProcessState.STARTING)
        try:
            await self._spawn()
        except OSError as exc:
            self.message = f"cannot start: {exc}"
            return Outcome.SPAWN_FAILED
        assert self._proc is not None
        exited: asyncio.Future[Any] = asyncio.ensure_future(self._proc.wait())
        ready: asyncio.Future[Any] = asyncio.ensure_future(self._ready.wait())
        try:
            woken = await self._woken_or(exited, ready, timeout=self.cfg.start_timeout)
        finally:
            ready.cancel()
        if exited.done():
            return Outcome.EXITED
        if woken and not self._ready.is_set():
            await self._terminate(self.cfg.stop_timeout)
            return Outcome.REQUESTED
        if not self._ready.is_set():
            self._log.warning("not ready in time", start_timeout=self.cfg.start_timeout)
            await self._terminate(self.cfg.stop_timeout)
            self.message = f"not ready within {self.cfg.start_timeout:g} s"
            return Outcome.NOT_READY
        self.started_at = time.monotonic()
        self._set(ProcessState.RUNNING)
        return await self._supervise(exited)

    async def _supervise(self, exited: asyncio.Future[Any]) -> Outcome:
        self._hung = False
        self._host.watch(self._pings, self.cfg, self._on_hung)
        self._watched = True
        try:
            while True:
                if not self._want_running or self._restart_requested:
                    await self._terminate(self.cfg.stop_timeout)
                    return Outcome.REQUESTED
                if self._hung:
                    missed = self._pings.missed
                    self._log.error("hung: restarting", missed=missed)
                    await self._terminate(self.cfg.stop_timeout)
                    # After _terminate: its STOPPING state would clear the message.
                    self.message = f"hung: {missed} pings missed"
                    return Outcome.HUNG
                self._wake.clear()
                await self._woken_or(exited)
                if exited.done():
                    return Outcome.EXITED
        finally:
            self._watched = False
            self._host.unwatch(self._pings)

    def _on_hung(self) -> None:
        """The pings say it hangs: the lifecycle restarts it."""
        self._hung = True
        self._wake.set()

    async def _after(self, outcome: Outcome) -> None:
        proc = self._proc
        code = proc.returncode if proc is not None else None
        ran_for = time.monotonic() - self.started_at if self.started_at else 0.0
        if self.state in _RUNNING and ran_for >= self.cfg.healthy_after:
            self._policy.reset()
        # Whatever the operator left behind in its process group goes with it.
        self._signal_group_always(proc)
        self._proc = None
        self._ps = None
        self.pid = None
        self._pings.reset()
        if outcome is Outcome.REQUESTED or not self._want_running:  # (may exit as it stops)
            if self._restart_requested and self._want_running:
                self.restarts += 1
                return
            self._set(ProcessState.STOPPED)
            return
        verdict = self._policy.judge(outcome, code, self.message)
        if verdict.state is not ProcessState.BACKOFF:
            self._want_running = False
            self._set(verdict.state, verdict.message, level=verdict.level)
            return
        self._set(ProcessState.BACKOFF, verdict.message, level=verdict.level)
        self._wake.clear()
        await self._woken_or(timeout=verdict.delay)
        if self._want_running:
            self.restarts += 1

    async def _spawn(self) -> None:
        await asyncio.to_thread(self._prepare)
        proc = await self._host.spawn(self.cfg, self._env, self.paths.cache_dir, self._log)
        self._proc = proc
        self.pid = proc.pid
        if proc.pid in self._early_ready:
            self._ready.set()
        self._early_ready.clear()
        self.started_at = time.monotonic()
        self._ps = track(proc.pid)
        self._relay.follow(proc)
        self._log.info("spawned", pid=proc.pid, argv=self.cfg.argv())

    async def _terminate(self, timeout: float) -> None:
        self._host.unwatch(self._pings)  # a process on its way out owes no answers
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        self._set(ProcessState.STOPPING)
        self.send_term()
        try:
            await asyncio.wait_for(proc.wait(), timeout=timeout)
        except TimeoutError:
            self._log.warning("did not stop in time: SIGKILL", stop_timeout=timeout)
            self.kill_now()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=5)
        # Anything left in the operator's process group goes too.
        self._signal_group_always(proc)

    @staticmethod
    def _signal_group_always(proc: Child | None) -> None:
        """SIGKILL what is left of ``proc``'s process group, even after its leader exited."""
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
