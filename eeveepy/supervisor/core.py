"""``eevee up``: the bus, then every enabled operator, supervised until shutdown.

The supervisor owns the embedded nats-server (when no bus URL is configured), gives each
operator its own bus user, holds a JetStream KV lease per operator id so that two supervisors
on one bus never run the same id, answers ``supervisor.status`` / ``supervisor.ctl``, and writes
a state file the CLI uses to find it. SIGHUP re-reads the configuration; SIGINT/SIGTERM stop
everything (bounded), a second one forces.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from nats.aio.client import Client as NatsClient

from eeveepy.aio import cancel_and_wait
from eeveepy.bus.client import BusConfig, connect
from eeveepy.bus.ipc import Ipc
from eeveepy.bus.names import leases_bucket_name
from eeveepy.bus.natsserver import EmbeddedNats, NatsUser
from eeveepy.bus.streams import ensure_chat_streams
from eeveepy.config import Config, OperatorConfig, load_config
from eeveepy.errors import BusError, ConfigError, EeveeError, NatsServerError, SupervisorError
from eeveepy.logs import LogShipper, ensure_log_stream
from eeveepy.paths import Paths
from eeveepy.protocol.models import (
    Control,
    ControlAction,
    ControlResult,
    Envelope,
    LogRecord,
    Ready,
    SupervisorStatus,
)
from eeveepy.protocol.subjects import Subjects
from eeveepy.runtime.contract import (
    ENV_CACHE_DIR,
    ENV_DATA_DIR,
    ENV_NATS_PASSWORD,
    ENV_NATS_URL,
    ENV_NATS_USER,
    ENV_OPERATOR_ID,
    ENV_SETTINGS,
    ENV_SETTINGS_FILE,
    ENV_SUBJECT_PREFIX,
    ENV_SUPERVISOR,
)
from eeveepy.supervisor.buswatch import BusWatch
from eeveepy.supervisor.forkserver import ForkServer, ForkServerError
from eeveepy.supervisor.leases import Leases
from eeveepy.supervisor.process import OperatorProcess, State
from eeveepy.supervisor.statefile import read_state, remove_state, write_state

SUPERVISOR_USER = "eevee-supervisor"
CLI_USER = "eevee-cli"
SUPERVISOR_HEADER = "supervisor"
"""Header naming the supervisor a status/ctl request is for (from the state file)."""


def _secret() -> str:
    return secrets.token_urlsafe(24)


class Supervisor:
    """Runs the bus and the operators of one configuration."""

    def __init__(self, config: Config, *, name: str | None = None) -> None:
        self.config = config
        self.name = name or config.supervisor.name or f"{socket.gethostname()}-{os.getpid()}"
        self.paths: Paths = config.resolved_paths()
        self.started = datetime.now(UTC)
        # Lazy (no .bind()): the CLI configures logging (shipping to the bus) after this.
        self._log = structlog.get_logger("eeveepy.supervisor", supervisor=self.name)
        self._server: EmbeddedNats | None = None
        self._nc: NatsClient | None = None
        self._ipc: Ipc | None = None
        self._procs: dict[str, OperatorProcess] = {}
        self._order: list[str] = []
        self._secrets: dict[str, str] = {}
        self._cli_password = _secret()
        self._sup_password = _secret()
        self._url = ""
        self._leases: Leases | None = None
        self._watch = BusWatch(None, log=self._log, on_fatal=lambda _: self.request_stop())
        self._tasks: set[asyncio.Task[None]] = set()
        self._reload_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._force = False
        self.on_change: Callable[[OperatorProcess], None] | None = None
        self._fork: ForkServer | None = None
        self._shipper: LogShipper | None = None
        self._early_logs: deque[LogRecord] = deque(maxlen=1000)
        self._fork_lock = asyncio.Lock()
        self._fork_failed_at = 0.0
        self._fork_warm: asyncio.Task[ForkServer | None] | None = None

    # -- public ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The bus URL operators and the CLI use."""
        return self._url

    @property
    def operators(self) -> dict[str, OperatorProcess]:
        """Supervised operators by id, in start order."""
        return {i: self._procs[i] for i in self._order if i in self._procs}

    @property
    def fatal(self) -> str | None:
        """Why the supervisor gave up (the bus keeps dying), or None."""
        return self._watch.fatal

    def request_stop(self) -> None:
        """Begin a graceful shutdown; called twice, force it."""
        if self._stop.is_set():
            self._force = True
            self._log.warning("second stop request: killing operators now")
            for proc in self._procs.values():
                proc.kill_now()
        self._stop.set()

    async def run(self) -> int:
        """Start everything, wait for a stop request, stop everything. Returns an exit code."""
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
            installed.append(sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        installed.append(signal.SIGHUP)
        try:
            await self.start()
            await self._stop.wait()
            return 1 if self.fatal else 0
        finally:
            await self.shutdown()
            for sig in installed:
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
        if any(op.module and op.enabled for op in self.config.operators.values()):
            # Preload the fork server while the bus starts.
            self._fork_warm = asyncio.ensure_future(self._forkserver())
        await self._start_bus()
        await self._start_leases()
        ipc = self._ipc
        assert ipc is not None

        async def on_ready(env: Envelope[Ready]) -> None:
            proc = self._procs.get(env.body.operator)
            if proc is not None:
                proc.mark_ready(env.body.pid)

        def for_me(env: Envelope[Any]) -> bool:
            # Every supervisor on the bus with this prefix gets these requests: answer only
            # the ones addressed to this supervisor (or to none in particular).
            return env.headers.get(SUPERVISOR_HEADER, self.name) == self.name

        async def on_status(env: Envelope[dict[str, Any]]) -> SupervisorStatus | None:
            return self.status() if for_me(env) else None

        async def on_ctl(env: Envelope[Control]) -> ControlResult | None:
            if not for_me(env):
                return None
            return await self.control(env.body.action, env.body.target)

        await ipc.subscribe(ipc.subjects.pattern("operator.ready.>"), on_ready)
        await ipc.subscribe(ipc.subjects.supervisor("status"), on_status)
        await ipc.subscribe(ipc.subjects.supervisor("ctl"), on_ctl)
        await self._write_state()
        for cfg in self.config.operators.values():
            self._add(cfg)
        self._log.info("up", bus=self._url, operators=len(self._procs))

    async def reload(self) -> ControlResult:
        """Re-read the configuration: add, remove, reload or restart what changed.

        All or nothing: an invalid file, or bus users the server does not take (they are
        rolled back), leave the running plan as it was and say why at error level.
        """
        async with self._reload_lock:
            return await self._reload()

    async def _reload(self) -> ControlResult:
        source = self.config.source
        try:
            new = load_config(source)
        except ConfigError as exc:
            self._log.error("configuration not reloaded", problems=exc.problems or str(exc))
            return ControlResult(ok=False, message=str(exc))
        if new.bus != self.config.bus or new.prefix != self.config.prefix:
            self._log.warning("bus and prefix changes need a restart of eevee up")
        old_ops = self.config.operators
        added = [i for i in new.operators if i not in old_ops]
        removed = [i for i in old_ops if i not in new.operators]
        try:  # the new operators' bus users first: the plan changes once they are in force
            await self._sync_users([*old_ops, *added])
        except NatsServerError as exc:
            for op_id in added:
                self._secrets.pop(op_id, None)
            self._log.error("configuration not reloaded: the bus refused the users", error=str(exc))
            return ControlResult(ok=False, message=f"configuration not reloaded: {exc}")
        self.config = new
        for op_id in removed:
            await self._remove(op_id)
        if removed:
            try:
                await self._sync_users(list(new.operators))
            except NatsServerError as exc:
                self._log.error(
                    "removed operators' bus users are still valid (the next reload retries)",
                    error=str(exc),
                )
        for op_id, cfg in new.operators.items():
            old = old_ops.get(op_id)
            if old is None:
                self._add(cfg)
            elif cfg != old:
                proc = self._procs[op_id]
                only_settings = old.model_copy(update={"settings": cfg.settings}) == cfg
                proc.update_config(cfg, self._env_for(cfg))
                if not cfg.enabled:
                    proc.stop()
                elif only_settings:
                    proc.reload()
                else:
                    proc.restart()
            elif cfg.enabled:
                self._procs[op_id].reload()
        self._log.info("configuration reloaded", operators=len(self._procs))
        return ControlResult(ok=True, message="configuration reloaded", operators=self._statuses())

    async def control(self, action: ControlAction, target: str) -> ControlResult:
        """Apply a lifecycle action to one operator or ``all``."""
        if action == ControlAction.SHUTDOWN:
            asyncio.get_running_loop().call_soon(self.request_stop)
            return ControlResult(ok=True, message="shutting down")
        if action == ControlAction.RELOAD and target in ("", "supervisor"):
            return await self.reload()
        if target in ("all", ""):
            ids = list(self._order)
        elif target in self._procs:
            ids = [target]
        else:
            known = ", ".join(self._order) or "none"
            return ControlResult(ok=False, message=f"unknown operator {target!r} (known: {known})")
        ok = True
        notes: list[str] = []
        for op_id in ids:
            proc = self._procs[op_id]
            if action == ControlAction.HALT:
                res = await proc.halt()
            elif action == ControlAction.RESUME:
                res = await proc.resume()
            elif action == ControlAction.RELOAD:
                sent = proc.reload()
                res = ControlResult(ok=sent, message="" if sent else f"{op_id} is not running")
            elif action == ControlAction.RESTART:
                proc.restart()
                res = ControlResult(ok=True)
            elif action == ControlAction.STOP:
                proc.stop()
                res = ControlResult(ok=True)
            elif action == ControlAction.START:
                proc.start()
                res = ControlResult(ok=True)
            else:  # pragma: no cover - every action is handled above
                res = ControlResult(ok=False, message=f"unknown action {action}")
            ok = ok and res.ok
            if res.message:
                notes.append(res.message)
        if action in (ControlAction.RESTART, ControlAction.STOP, ControlAction.START):
            await self._settle(ids, action)
        statuses = [s for s in self._statuses() if s.id in ids]
        return ControlResult(ok=ok, message="; ".join(notes), operators=statuses)

    def status(self) -> SupervisorStatus:
        """What ``eevee ps`` shows."""
        return SupervisorStatus(
            supervisor=self.name, pid=os.getpid(), started=self.started, operators=self._statuses()
        )

    async def shutdown(self) -> None:
        """Stop every operator (reverse start order, bounded), then the bus. Idempotent."""
        timeout = self.config.supervisor.shutdown_timeout
        procs = [self._procs[i] for i in reversed(self._order) if i in self._procs]
        for proc in procs:
            proc.stop()
            proc.send_term()
        if procs:
            self._log.info("stopping operators", count=len(procs))
            deadline = time.monotonic() + timeout
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
        self._order.clear()
        if self._fork_warm is not None:
            self._fork_warm.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._fork_warm
        if self._fork is not None:
            await self._fork.stop()
            self._fork = None
        for task in list(self._tasks):
            await cancel_and_wait(task)
        if self._leases is not None:
            await self._leases.stop()
        if self._shipper is not None:
            await self._shipper.stop()
            self._shipper = None
        if self._ipc is not None:
            await self._ipc.detach()
        await self._watch.stop()  # before the bus goes: that is no crash, nor an outage
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), timeout=3)
            self._nc = None
        self._remove_state()
        if self._server is not None:
            await self._server.stop()
            self._server = None
        self._log.info("down")

    # -- bus -------------------------------------------------------------------------------

    def _users(self, op_ids: list[str]) -> list[NatsUser]:
        users = [
            NatsUser(SUPERVISOR_USER, self._sup_password),
            NatsUser(CLI_USER, self._cli_password),
        ]
        for op_id in op_ids:
            password = self._secrets.setdefault(op_id, _secret())
            users.append(NatsUser(f"op:{op_id}", password))
        return users

    async def _sync_users(self, op_ids: list[str]) -> None:
        if self._server is not None:
            await self._server.set_users(self._users(op_ids))

    async def _start_bus(self) -> None:
        bus = self.config.bus
        if bus.url is None:
            self._server = EmbeddedNats(
                store_dir=self.paths.state_dir / "nats",
                users=self._users(list(self.config.operators)),
                max_payload=bus.max_payload,
            )
            await self._server.start()
            self._url = self._server.url
            self._watch.server = self._server
            self._watch.start()
            self._nc = await connect(
                BusConfig(),
                name=f"supervisor:{self.name}",
                url=self._url,
                user=SUPERVISOR_USER,
                password=self._sup_password,
                on_disconnect=self._watch.disconnected,
                on_reconnect=self._bus_back,
            )
        else:
            self._url = bus.url
            self._nc = await connect(
                bus,
                name=f"supervisor:{self.name}",
                on_disconnect=self._watch.disconnected,
                on_reconnect=self._bus_back,
            )
        self._ipc = Ipc(Subjects(self.config.prefix), "supervisor", logger=self._log)
        await self._ipc.attach(self._nc)
        sup = self.config.supervisor
        try:
            await ensure_log_stream(
                self._nc.jetstream(),
                self.config.prefix,
                max_age=sup.log_history_max_age,
                max_bytes=sup.log_history_max_bytes,
            )
        except BusError as exc:
            self._log.warning("no log history on the bus", error=str(exc))
        try:
            await ensure_chat_streams(self._nc.jetstream(), self.config.prefix)
        except BusError as exc:
            self._log.warning("chat is not stored: messages may be lost", error=str(exc))
        self._shipper = LogShipper(self._ipc)
        for record in self._early_logs:
            self._shipper.submit(record)
        self._early_logs.clear()
        self._shipper.start()

    def ship(self, record: LogRecord) -> None:
        """Publish a log record on the bus (queued; never blocks, never raises)."""
        if self._shipper is not None:
            self._shipper.submit(record)
        else:
            self._early_logs.append(record)

    # -- fork server -----------------------------------------------------------------------

    async def _forkserver(self) -> ForkServer | None:
        """The running fork server, started on first use; None when disabled or broken."""
        if not self.config.supervisor.forkserver:
            return None
        async with self._fork_lock:
            if self._fork is not None and self._fork.running:
                return self._fork
            if time.monotonic() - self._fork_failed_at < 30:
                return None
            server = ForkServer()
            try:
                await server.start()
            except ForkServerError as exc:
                self._fork_failed_at = time.monotonic()
                self._log.warning(
                    "no fork server: operators start as fresh processes", error=str(exc)
                )
                return None
            self._fork = server
            return server

    # -- leases ----------------------------------------------------------------------------

    async def _start_leases(self) -> None:
        assert self._nc is not None
        self._leases = await Leases.open(
            self._nc.jetstream(),
            leases_bucket_name(self.config.prefix),
            self.name,
            self.config.supervisor.lease_ttl,
            # The embedded bus is this installation's alone: leases left by an earlier run that
            # was killed mean nothing, and waiting for them to expire would only delay start.
            fresh=self._server is not None,
            log=self._log,
            on_lost=self._lease_lost,
            connected=lambda: self._watch.connected,
            settled=self._watch.settled,
        )
        self._leases.start()

    async def _acquire(self, op_id: str) -> str | None:
        return await self._leases.acquire(op_id) if self._leases is not None else None

    async def _release(self, op_id: str) -> None:
        if self._leases is not None:
            await self._leases.release(op_id)

    def _lease_lost(self, op_id: str) -> None:
        proc = self._procs.get(op_id)
        if proc is not None:
            proc.restart()  # back to waiting for the lease

    async def _bus_back(self) -> None:
        """The supervisor's connection is back: re-establish the leases now, not in ttl/3."""
        await self._watch.reconnected()
        if self._leases is not None:
            self._spawn(self._leases.renew())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task held until it ends (shutdown cancels what is left)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_sighup(self) -> None:
        self._spawn(self._reload_on_signal())

    async def _reload_on_signal(self) -> None:
        try:
            await self.reload()
        except Exception as exc:  # a reload must never take the supervisor down, nor go unsaid
            self._log.exception("configuration reload failed", error=repr(exc))

    # -- operators -------------------------------------------------------------------------

    def _env_for(self, cfg: OperatorConfig) -> dict[str, str]:
        env = {
            ENV_OPERATOR_ID: cfg.id,
            ENV_NATS_URL: self._url,
            ENV_SUBJECT_PREFIX: self.config.prefix,
            ENV_SETTINGS: json.dumps(cfg.settings),
            ENV_SETTINGS_FILE: str(self._settings_file(cfg.id)),
            ENV_CACHE_DIR: str(self.paths.operator_cache_dir(cfg.id)),
            ENV_DATA_DIR: str(self.paths.operator_data_dir(cfg.id)),
            ENV_SUPERVISOR: self.name,
            "PYTHONUNBUFFERED": "1",
        }
        if self._server is not None:
            env[ENV_NATS_USER] = f"op:{cfg.id}"
            env[ENV_NATS_PASSWORD] = self._secrets[cfg.id]
        else:
            bus = self.config.bus
            if bus.user:
                env[ENV_NATS_USER] = bus.user
                env[ENV_NATS_PASSWORD] = bus.password or ""
        return env

    def _settings_file(self, op_id: str) -> Path:
        return self.paths.state_dir / "operators" / op_id / "settings.json"

    def _add(self, cfg: OperatorConfig) -> None:
        assert self._ipc is not None
        self._secrets.setdefault(cfg.id, _secret())
        self.paths.operator_data_dir(cfg.id).mkdir(parents=True, exist_ok=True)
        proc = OperatorProcess(
            cfg,
            ipc=self._ipc,
            env=self._env_for(cfg),
            settings_file=self._settings_file(cfg.id),
            cache_dir=self.paths.operator_cache_dir(cfg.id),
            acquire_lease=self._acquire,
            release_lease=self._release,
            on_change=self._changed,
            on_log=self.ship,
            forkserver=self._forkserver,
            bus=self._watch,
        )
        self._procs[cfg.id] = proc
        self._order.append(cfg.id)
        if cfg.enabled:
            proc.start()

    async def _remove(self, op_id: str) -> None:
        proc = self._procs.pop(op_id, None)
        if op_id in self._order:
            self._order.remove(op_id)
        self._secrets.pop(op_id, None)
        if proc is not None:
            await proc.close(proc.cfg.stop_timeout)

    def _changed(self, proc: OperatorProcess) -> None:
        if self.on_change is not None:
            self.on_change(proc)

    def _statuses(self) -> list[Any]:
        return [self._procs[i].status() for i in self._order if i in self._procs]

    async def _settle(self, ids: list[str], action: ControlAction, timeout: float = 10.0) -> None:
        """Wait (bounded) until the operators reach a resting state after an action."""
        want = {State.STOPPED} if action == ControlAction.STOP else {State.RUNNING}
        resting = want | {State.FATAL, State.EXITED}
        deadline = time.monotonic() + timeout
        await asyncio.sleep(0.05)
        while time.monotonic() < deadline:
            if all(self._procs[i].state in resting for i in ids if i in self._procs):
                return
            await asyncio.sleep(0.05)

    # -- state file ------------------------------------------------------------------------

    async def _write_state(self) -> None:
        embedded = self._server is not None
        state = {
            "supervisor": self.name,
            "pid": os.getpid(),
            "url": self._url,
            "user": CLI_USER if embedded else self.config.bus.user,
            "password": self._cli_password if embedded else self.config.bus.password,
            "prefix": self.config.prefix,
            "config": str(self.config.source) if self.config.source else None,
            "started": self.started.isoformat(),
        }
        write_state(self.paths.state_file, state)

    def _remove_state(self) -> None:
        remove_state(self.paths.state_file)


__all__ = ["EeveeError", "Supervisor", "read_state"]
