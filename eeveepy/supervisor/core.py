"""``eevee up``: the bus, then every enabled operator, supervised until shutdown.

The supervisor owns the embedded nats-server (when no bus URL is configured) and gives each
operator its own bus user (:mod:`~eeveepy.supervisor.boot`), holds a JetStream KV lease per
operator id so that two supervisors on one bus never run the same id
(:mod:`~eeveepy.supervisor.leases`), answers ``supervisor.status`` / ``supervisor.ctl``
(:mod:`~eeveepy.supervisor.control`), and writes a state file the CLI uses to find it
(:mod:`~eeveepy.supervisor.statefile`). SIGHUP re-reads the configuration
(:mod:`~eeveepy.supervisor.reload`); SIGINT/SIGTERM stop everything (bounded), a second one
forces.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import time
from collections.abc import Coroutine, Iterable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

import structlog

from eeveepy.aio import cancel_and_wait
from eeveepy.config import Config, OperatorConfig, load_config
from eeveepy.config.verify import verify
from eeveepy.errors import ConfigError, EeveeError, NatsServerError, SupervisorError
from eeveepy.paths import OperatorPaths, Paths
from eeveepy.protocol.models import (
    ConfigProblem,
    ControlAction,
    ControlResult,
    LogRecord,
    OperatorStatus,
    SupervisorStatus,
)
from eeveepy.runtime.contract import ENV_NATS_PASSWORD
from eeveepy.supervisor.boot import Bus, BusUsers, start_bus
from eeveepy.supervisor.buswatch import BusWatch
from eeveepy.supervisor.control import SUPERVISOR_HEADER, apply, probe, serve_requests
from eeveepy.supervisor.environ import operator_env, state_of
from eeveepy.supervisor.host import SupervisorHost
from eeveepy.supervisor.leases import Leases, bucket_name
from eeveepy.supervisor.lock import StateDirLock
from eeveepy.supervisor.placement import Placement, ensure_leases_bucket, placed_on
from eeveepy.supervisor.prefork import PreForked
from eeveepy.supervisor.process import OperatorProcess
from eeveepy.supervisor.reload import ReloadPlan, Step, plan_reload
from eeveepy.supervisor.spawn import Launcher
from eeveepy.supervisor.statefile import read_state, remove_state, write_state
from eeveepy.supervisor.states import ProcessState

__all__ = ["SUPERVISOR_HEADER", "EeveeError", "Supervisor", "read_state"]


class Supervisor:
    """Runs the bus and the operators of one configuration."""

    def __init__(
        self, config: Config, *, name: str | None = None, forked: PreForked | None = None
    ) -> None:
        self.config = config
        self.name = name or config.supervisor.name or f"{socket.gethostname()}-{os.getpid()}"
        self.paths: Paths = config.resolved_paths()
        self.started = datetime.now(UTC)
        # Lazy (no .bind()): the CLI configures logging (shipping to the bus) after this.
        self._log = structlog.get_logger("eeveepy.supervisor", supervisor=self.name)
        self._bus: Bus | None = None
        self._procs: dict[str, OperatorProcess] = {}  # in start order
        self._users = BusUsers(config.prefix)
        self._started_once: set[str] = set()  # operators whose first secret was handed out
        self._synced: dict[str, OperatorConfig] = dict(config.operators)  # the server's users
        self._watch = BusWatch(None, log=self._log, on_fatal=lambda _: self.request_stop())
        launcher = Launcher(forkserver=config.supervisor.forkserver, log=self._log, forked=forked)
        self._host = SupervisorHost(self._watch, launcher)
        self._tasks: set[asyncio.Task[None]] = set()
        self._reload_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._lock = StateDirLock(self.paths.state_dir)

    # -- public ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The bus URL operators and the CLI use."""
        return self._bus.url if self._bus is not None else ""

    @property
    def operators(self) -> dict[str, OperatorProcess]:
        """Supervised operators by id, in start order."""
        return dict(self._procs)

    @property
    def fatal(self) -> str | None:
        """Why the supervisor gave up (the bus keeps dying), or None."""
        return self._watch.fatal

    def request_stop(self) -> None:
        """Begin a graceful shutdown; called twice, force it."""
        if self._stop.is_set():
            self._log.warning("second stop request: killing operators now")
            for proc in self._procs.values():
                proc.kill_now()
        else:
            self._log.info("stopping: press Ctrl-C again (or send a second SIGTERM) to force")
        self._stop.set()

    def ship(self, record: LogRecord) -> None:
        """Publish a log record on the bus (queued; never blocks, never raises)."""
        self._host.ship(record)

    async def run(self) -> int:
        """Start everything, wait for a stop request, stop everything. Returns an exit code."""
        loop = asyncio.get_running_loop()
        handlers = {signal.SIGINT: self.request_stop, signal.SIGTERM: self.request_stop}
        handlers[signal.SIGHUP] = lambda: self._spawn_task(self._reload_on_signal())
        for sig, handler in handlers.items():
            loop.add_signal_handler(sig, handler)
        try:
            await self.start()
            await self._stop.wait()
            return 1 if self.fatal else 0
        finally:
            await self.shutdown()
            for sig in handlers:
                loop.remove_signal_handler(sig)

    async def start(self) -> None:
        """Start the bus, connect, take control subjects, spawn the enabled operators."""
        try:
            self.paths.ensure().check_writable()
        except OSError as exc:
            where = exc.filename or self.paths.state_dir
            raise SupervisorError(
                f"cannot write to {where} ({exc.strerror or exc}): make it writable, or set"
                " [paths] state_dir (or XDG_STATE_HOME) to a writable directory"
            ) from None
        # Before anything in the state directory is touched: another supervisor may own it.
        self._lock.acquire(self.config.source)
        if any(op.module and op.enabled for op in self.config.operators.values()):
            self._host.launcher.warm()  # the fork server preloads while the bus starts
        # What is imported by now lives as long as we do: out of the collector's sight, a full
        # collection no longer walks it (one took 0.1-0.4 s at 200 operators, every minute).
        gc.collect()
        gc.freeze()
        self._bus = bus = await start_bus(
            self.config,
            name=self.name,
            store_dir=self.paths.state_dir / "nats",
            users=self._users,
            watch=self._watch,
            on_reconnect=self._bus_back,
            log=self._log,
        )
        self._host.start_shipping(bus.ipc)
        self._host.start_pings(bus.ipc)
        if bus.server is not None:
            self._host.credentials = self._fresh_secret
        await self._start_leases(bus)
        await serve_requests(
            bus.ipc, self.name, status=self.status, control=self.control, ready=self._ready
        )
        self._write_state(bus)
        await self._ensure_buckets(self.config.operators.values(), wait=False)  # (see spawn)
        for cfg in self.config.operators.values():
            self._add(cfg)
        self._log.info("up", bus=bus.url, operators=len(self._procs))

    async def reload(self) -> ControlResult:
        """Re-read the configuration, check it fully, then add, remove, reload or restart
        what changed; the result holds the plan, or every problem found.

        All or nothing: an invalid file, an operator that would not start (its module or
        executable missing, its settings invalid), or bus users the server does not take
        (they are rolled back) leave the running plan as it was, and say why at error level.
        """
        async with self._reload_lock:
            self._log.info("reloading the configuration", config=str(self.config.source))
            try:
                new = load_config(self.config.source)
            except ConfigError as exc:
                return self._not_reloaded(exc.problems or [(str(self.config.source), str(exc))])
            plan = plan_reload(self.config.operators, new.operators)
            # Only what starts or takes new settings: the rest runs already.
            problems = await verify(new, plan.touched)
            if problems:
                return self._not_reloaded(problems)
            if new.bus != self.config.bus or new.prefix != self.config.prefix:
                self._log.warning("bus and prefix changes need a restart of eevee up")
            try:  # the new operators' bus users first: the plan changes once they are in force
                await self._sync_users({**self.config.operators, **new.operators})
            except NatsServerError as exc:
                for op_id in plan.added:
                    self._users.forget(op_id)
                why = f"configuration not reloaded: the bus refused the users: {exc}"
                self._log.error(why)
                return ControlResult(ok=False, message=why)
            self.config = new
            self._host.launcher.use_forkserver = new.supervisor.forkserver
            await self._apply(plan, new)
            done = plan.summary()
            self._log.info(
                "configuration reloaded", **{k: ",".join(v) for k, v in done.items() if v}
            )
            return ControlResult(
                ok=True,
                message=_describe(done),
                operators=self._statuses(),
                plan=done,
            )

    def _not_reloaded(self, problems: list[tuple[str, str]]) -> ControlResult:
        for where, what in problems:
            self._log.error("configuration not reloaded", where=where, problem=what)
        return ControlResult(
            ok=False,
            message=f"configuration not reloaded: {len(problems)} problem(s); nothing changed",
            problems=[ConfigProblem(where=w, what=m) for w, m in problems],
        )

    async def _apply(self, plan: ReloadPlan, new: Config) -> None:
        for op_id in plan.removed:
            await self._remove(op_id)
        if plan.removed:
            try:
                await self._sync_users(new.operators)
            except NatsServerError as exc:
                self._log.error(
                    "removed operators' bus users are still valid (the next reload retries)",
                    error=str(exc),
                )
        await self._ensure_buckets([new.operators[op_id] for op_id in plan.added])
        for cfg, step in plan.steps:
            if step is Step.ADD:
                self._add(cfg)
                continue
            proc = self._procs.get(cfg.id)
            if proc is None:  # placed on another supervisor until now
                self._add(cfg)
                continue
            if not placed_on(cfg, self.name):  # placed on another supervisor from now on
                await self._remove(cfg.id, configured=True)
                continue
            if cfg.id in plan.changed:
                proc.update_config(cfg, self._env_for(cfg, proc.paths))
            if step is Step.STOP:
                proc.stop()
            elif step is Step.RESTART:
                proc.restart()
            elif step is Step.RELOAD:
                proc.reload()

    async def control(self, action: ControlAction, target: str) -> ControlResult:
        """Apply a lifecycle action to one operator or ``all``."""
        if action == ControlAction.SHUTDOWN:
            asyncio.get_running_loop().call_soon(self.request_stop)
            return ControlResult(ok=True, message="shutting down")
        if action == ControlAction.RELOAD and target in ("", "supervisor"):
            return await self.reload()
        if target in ("all", "") or target in self._procs:
            procs = list(self._procs.values()) if target in ("all", "") else [self._procs[target]]
            result = await apply(action, procs)
            return result.model_copy(update={"operators": self._placed(result.operators)})
        known = ", ".join(self._procs) or "none"
        hint = ""
        with contextlib.suppress(ConfigError):
            if target in load_config(self.config.source).operators:
                hint = f"; it is new in {self.config.source}: `eevee reload` adds it"
        return ControlResult(
            ok=False, message=f"unknown operator {target!r} (known: {known}){hint}"
        )

    def status(self) -> SupervisorStatus:
        """What ``eevee ps`` shows."""
        return SupervisorStatus(
            supervisor=self.name, pid=os.getpid(), started=self.started, operators=self._statuses()
        ).model_copy(update={"warnings": self._watch.warnings})

    async def shutdown(self) -> None:
        """Stop every operator (reverse start order, bounded), then the bus. Idempotent."""
        if not self._lock.held:
            return  # never started (or refused: another supervisor owns the state directory)
        procs = list(reversed(self._procs.values()))
        for proc in procs:
            proc.stop()
            proc.send_term()
        if procs:
            self._log.info("stopping operators", count=len(procs))
            deadline = time.monotonic() + self.config.supervisor.shutdown_timeout
            results = await asyncio.gather(
                *(
                    p.close(max(0.1, min(p.cfg.stop_timeout, deadline - time.monotonic())))
                    for p in procs
                ),
                return_exceptions=True,
            )
            for res in results:
                if isinstance(res, BaseException):
                    self._log.error("operator stop failed", error=repr(res))
        self._procs.clear()
        await self._host.buckets.stop()
        await self._host.launcher.stop()
        for task in list(self._tasks):
            await cancel_and_wait(task)
        if self._host.leases is not None:
            await self._host.leases.stop()
        await self._host.stop_pings()
        await self._host.stop_shipping()
        bus, self._bus = self._bus, None
        if bus is not None:
            await bus.ipc.detach()
        await self._watch.stop()  # before the bus goes: that is no crash, nor an outage
        if bus is not None:
            with contextlib.suppress(Exception):  # best effort: the bus may be gone already
                await asyncio.wait_for(bus.nc.close(), timeout=3)
        remove_state(self.paths.state_file)
        if bus is not None and bus.server is not None:
            await bus.server.stop()
        self._lock.release()
        self._log.info("down")

    # -- bus and leases --------------------------------------------------------------------

    async def _sync_users(self, operators: Mapping[str, OperatorConfig]) -> None:
        if self._bus is not None and self._bus.server is not None:
            await self._bus.server.set_users(self._users.users(operators))
            self._synced = dict(operators)

    async def _ensure_buckets(self, ops: Iterable[OperatorConfig], *, wait: bool = True) -> None:
        """Make the operators' buckets: on the embedded server a runtime's when first looked up
        (see :mod:`eeveepy.bus.buckets`), the others now; ``wait`` until those are made."""
        if self._bus is not None:
            embedded, buckets = self._bus.server is not None, self._host.buckets
            ops = list(ops)
            lazy = {c.id for c in ops if embedded and c.module}
            await buckets.begin(
                self._bus.nc,
                [c.id for c in ops],
                lazy,
                self._log,
                prefix=self.config.prefix,
                replicas=self.config.bus.replicas,
                migrate=embedded,
            )
            if wait:
                await asyncio.gather(*(buckets.wait(c.id) for c in ops if c.id not in lazy))

    async def _fresh_secret(self, cfg: OperatorConfig) -> dict[str, str]:
        """A new bus secret for ``cfg``'s process about to start again (the first start uses
        the one the server was given with the others): what a dead process leaked is void."""
        if cfg.id not in self._started_once:
            self._started_once.add(cfg.id)
            return {}
        old = self._users.password(cfg.id)
        new = self._users.rotate(cfg.id)
        try:
            await self._sync_users(self._synced)
        except NatsServerError as exc:
            self._users.restore(cfg.id, old)
            self._log.warning("bus secret not renewed", operator=cfg.id, error=str(exc))
            return {}
        return {ENV_NATS_PASSWORD: new}

    async def _start_leases(self, bus: Bus) -> None:
        bucket, ttl = bucket_name(self.config.prefix), self.config.supervisor.lease_ttl
        if bus.server is None:  # (the embedded server's is made afresh, with one copy)
            await ensure_leases_bucket(bus.nc.jetstream(), bucket, ttl, self.config.bus.replicas)
        self._host.leases = leases = await Leases.open(
            bus.nc,
            bucket,
            self.name,
            ttl,
            # The embedded bus is this installation's alone: leases left by an earlier run that
            # was killed mean nothing, and waiting for them to expire would only delay start.
            fresh=bus.server is not None,
            log=self._log,
            on_lost=self._lease_lost,
            connected=lambda: self._watch.connected,
            settled=self._watch.settled,
        )
        self._host.placement = Placement(leases, partial(probe, bus.ipc), log=self._log)
        leases.start()

    def _lease_lost(self, op_id: str) -> None:
        proc = self._procs.get(op_id)
        if proc is not None:
            proc.restart()  # back to waiting for the lease

    async def _bus_back(self) -> None:
        """The supervisor's connection is back: re-establish the leases now, not in ttl/3."""
        await self._watch.reconnected()
        if self._host.leases is not None:
            self._spawn_task(self._host.leases.renew())

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task held until it ends (shutdown cancels what is left)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload_on_signal(self) -> None:
        try:
            await self.reload()
        except Exception as exc:  # a reload must never take the supervisor down, nor go unsaid
            self._log.exception("configuration reload failed", error=repr(exc))

    # -- operators -------------------------------------------------------------------------

    def _env_for(self, cfg: OperatorConfig, paths: OperatorPaths) -> dict[str, str]:
        return operator_env(
            self.config, cfg, paths, name=self.name, bus=self._bus, users=self._users, log=self._log
        )

    def _add(self, cfg: OperatorConfig) -> None:
        assert self._bus is not None
        if not placed_on(cfg, self.name):
            return  # another supervisor's (its hosts leave this one out)
        paths = self.paths.operator(cfg.id)
        proc = OperatorProcess(
            cfg, ipc=self._bus.ipc, host=self._host, paths=paths, env=self._env_for(cfg, paths)
        )
        self._procs[cfg.id] = proc
        if cfg.enabled:
            proc.start()

    async def _remove(self, op_id: str, *, configured: bool = False) -> None:
        """Stop and forget ``op_id``; ``configured``: it stays in the configuration (placed
        elsewhere), and so does its bus user."""
        proc = self._procs.pop(op_id, None)
        if not configured:
            self._users.forget(op_id)
        if self._host.placement is not None:
            self._host.placement.forget(op_id)
        self._started_once.discard(op_id)
        if proc is not None:
            await proc.close(proc.cfg.stop_timeout)

    def _ready(self, op_id: str, pid: int) -> None:
        proc = self._procs.get(op_id)
        if proc is not None:
            proc.mark_ready(pid)

    def _statuses(self) -> list[OperatorStatus]:
        return self._placed([proc.status() for proc in self._procs.values()])

    def _placed(self, statuses: list[OperatorStatus]) -> list[OperatorStatus]:
        """``statuses`` saying this supervisor is their host, and which are standbys."""
        standby = self._host.placement.standby if self._host.placement is not None else {}
        return [
            st.model_copy(
                update={
                    "host": self.name,
                    "standby": st.id in standby and st.state == ProcessState.STOPPED.value,
                }
            )
            for st in statuses
        ]

    def _write_state(self, bus: Bus) -> None:
        state = state_of(
            self.config, name=self.name, bus=bus, users=self._users, started=self.started
        )
        write_state(self.paths.state_file, state)


def _describe(done: dict[str, list[str]]) -> str:
    """``configuration reloaded: added x; restarted y, z`` (unchanged ones counted)."""
    parts = [
        f"{what} {', '.join(ids)}" for what, ids in done.items() if ids and what != "unchanged"
    ]
    if done.get("unchanged"):
        parts.append(f"{len(done['unchanged'])} unchanged")
    return "configuration reloaded: " + ("; ".join(parts) or "nothing to do")
