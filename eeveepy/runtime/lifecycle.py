"""The life of an operator on the bus, from connecting to the last goodbye.

:meth:`Lifecycle.run` is what :meth:`Operator.serve <eeveepy.runtime.operator.Operator.serve>`
does once the environment and the settings are known, in this order: subscribe to pings and
control requests, connect (exit 69 when the bus is unreachable), subscribe (deliveries wait
until started), run the ``on_start`` hooks, publish :class:`~eeveepy.protocol.models.Ready`,
answer pings and control requests until asked to stop, then drain (bounded), run the
``on_stop`` hooks (bounded) and close the connection. A second stop request forces the end:
whatever is running is cancelled and the exit code is 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from nats.aio.client import Client as NatsClient
from structlog.typing import FilteringBoundLogger

from eeveepy.bus.client import barrier, connect
from eeveepy.bus.ipc import Ipc, Subscription
from eeveepy.errors import BusError, ConfigError
from eeveepy.protocol.models import Control, ControlAction, ControlResult, Ping, Pong, Ready
from eeveepy.runtime.contract import EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, Launch
from eeveepy.runtime.health import OperatorHealth
from eeveepy.runtime.hooks import HookEvent, Hooks
from eeveepy.runtime.kvstore import KvStore
from eeveepy.runtime.settings import log_problems

__all__ = ["Lifecycle", "OperatorState", "Timeouts"]

T = TypeVar("T")


class OperatorState(StrEnum):
    """Where an :class:`~eeveepy.runtime.operator.Operator` is in its life."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    HALTED = "halted"
    STOPPING = "stopping"


@dataclass(frozen=True)
class Timeouts:
    """Bounds of one run, in seconds: the drain at stop, the ``on_stop`` hooks together, and
    the hooks of one reload/halt/resume request."""

    drain: float
    stop: float
    hook: float


class Lifecycle:
    """The phases of one operator's run, and the control requests it answers meanwhile.

    ``reload_settings`` reads and sets new settings (raising :class:`ConfigError`); ``log``
    gives the operator's current logger.
    """

    def __init__(
        self,
        ipc: Ipc,
        hooks: Hooks,
        health: OperatorHealth,
        store: KvStore,
        *,
        reload_settings: Callable[[], None],
        log: Callable[[], FilteringBoundLogger],
    ) -> None:
        self._ipc = ipc
        self._hooks = hooks
        self._health = health
        self._store = store
        self._reload_settings = reload_settings
        self._log = log
        self.state = OperatorState.STOPPED
        self.nc: NatsClient | None = None
        """The connection while running."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runtime_subs: list[Subscription] = []
        self._operator_id = ""
        self._hook_timeout = 10.0
        self.reset()

    def reset(self) -> None:
        """Forget a finished run (its stop requests included)."""
        self.state = OperatorState.STOPPED
        self._started = False
        self._ctl_halted = False
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._ctl_lock = asyncio.Lock()

    def request_stop(self) -> None:
        """A graceful stop; a second request forces it (see ``Operator.request_stop``)."""
        log = self._log()
        if self._stop.is_set():
            log.warning("second stop request: stopping now")
            self._force.set()
        else:
            log.info("stop requested")
            self._stop.set()

    def reload_soon(self) -> None:
        """Reload in a task of its own (what SIGHUP does)."""
        self._log().info("SIGHUP: reloading")
        task = asyncio.get_running_loop().create_task(self._control(ControlAction.RELOAD))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, launch: Launch, name: str, timeouts: Timeouts) -> int:
        """Connect, serve until asked to stop, stop; the exit code."""
        self._operator_id = launch.operator_id
        self._hook_timeout = timeouts.hook
        try:
            return await self._phases(launch, name, timeouts)
        except BaseException:  # cancelled from outside: leave nothing connected behind
            await self._abort()
            raise

    # -- phases ----------------------------------------------------------------------------

    async def _phases(self, launch: Launch, name: str, timeouts: Timeouts) -> int:
        self.state = OperatorState.STARTING
        code: int | None = EXIT_FAILURE
        try:
            finished, code = await self._unless_forced(self._start(launch, name))
        except Exception as exc:
            self._log().exception("start failed", error=repr(exc))
            finished = True
        if finished and code is None:
            await self._stop.wait()
            code = EXIT_OK
        self.state = OperatorState.STOPPING
        if finished:
            finished, _ = await self._unless_forced(self._shutdown(timeouts))
        if not finished or code is None:
            await self._abort()
            self._log().warning("stop forced")
            return EXIT_FAILURE
        self._log().info("stopped", code=code)
        return code

    async def _start(self, launch: Launch, name: str) -> int | None:
        """Connect and announce; None when running, else the exit code."""
        ipc, op_id = self._ipc, launch.operator_id
        ping = ipc.subscribe(ipc.subjects.operator_ping(op_id), self._on_ping)
        ctl = ipc.subscribe(ipc.subjects.operator_ctl(op_id), self._on_ctl)
        ping.gated = ctl.gated = False
        self._runtime_subs = [ping, ctl]
        try:
            self.nc = await connect(
                launch.bus_config(),
                name=name,
                url=launch.nats_url,
                user=launch.user,
                password=launch.password,
                inbox_prefix=launch.inbox_prefix,
            )
        except BusError as exc:
            self._log().error("bus unavailable", error=str(exc))
            return EXIT_UNAVAILABLE
        ipc.halt()  # deliveries wait for on_start; pings and control do not
        await ipc.attach(self.nc)
        if self._hooks.registered[HookEvent.START]:
            # The hooks may count on the subscriptions being in place on the server (a
            # request whose answer comes to one of them). Without hooks Ready needs no such
            # wait (two round trips of every start): the server takes one connection's
            # commands in order, so the subscriptions are in place when Ready is routed.
            await barrier(self.nc)
            await self._hooks.run(HookEvent.START, self._log(), timeout=None, raise_errors=True)
        self._started = True
        if not self._ctl_halted:
            ipc.resume()
        self.state = OperatorState.HALTED if self._ctl_halted else OperatorState.RUNNING
        if not self._stop.is_set():
            ready = Ready(operator=op_id, pid=os.getpid())
            await ipc.publish(ipc.subjects.operator_ready(op_id), ready)
            await self.nc.flush()
            self._log().info("ready", subject_prefix=ipc.subjects.prefix)
        return None

    async def _shutdown(self, timeouts: Timeouts) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._ipc.connected and not await self._ipc.drain(timeouts.drain):
            self._log().warning("drain timed out: unhandled messages dropped", s=timeouts.drain)
        await self._forget_runtime_subs()
        if self._started:
            await self._hooks.run(HookEvent.STOP, self._log(), timeout=timeouts.stop)
        await self._store.close(timeout=0.5)
        await self._close()

    async def _abort(self) -> None:
        """A forced stop: drop everything, bounded."""
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self._ipc.detach()
                await self._store.close(timeout=0)
                await self._forget_runtime_subs()
                await self._close()

    async def _forget_runtime_subs(self) -> None:
        for sub in self._runtime_subs:
            await sub.unsubscribe()
        self._runtime_subs = []

    async def _close(self) -> None:
        nc, self.nc = self.nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), timeout=2.0)

    async def _unless_forced(self, coro: Coroutine[Any, Any, T]) -> tuple[bool, T | None]:
        """Run ``coro`` unless a forced stop comes first: ``(finished, result)``."""
        task = asyncio.ensure_future(coro)
        forced = asyncio.ensure_future(self._force.wait())
        try:
            await asyncio.wait({task, forced}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            forced.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
        if task.cancelled():
            return False, None
        return True, task.result()

    # -- pings and control -----------------------------------------------------------------

    async def _on_ping(self, msg: Ping) -> Pong:
        health = self._health
        state = "halted" if self._ctl_halted else "running"
        return Pong(
            operator=self._operator_id, state=state, health=health.state, problem=health.problem
        )

    async def _on_ctl(self, msg: Control) -> ControlResult:
        return await self._control(msg.action)

    async def _control(self, action: ControlAction) -> ControlResult:
        async with self._ctl_lock:
            self._log().info("control", action=action.value)
            if action is ControlAction.HALT:
                return await self._halt()
            if action is ControlAction.RESUME:
                return await self._resume()
            if action is ControlAction.RELOAD:
                return await self._reload()
            if action is ControlAction.STOP:
                self._stop.set()
                return ControlResult(ok=True, message="stopping")
            return ControlResult(
                ok=False, message=f"{action.value!r} is not for an operator: ask the supervisor"
            )

    async def _halt(self) -> ControlResult:
        if self._ctl_halted:
            return ControlResult(ok=True, message="already halted")
        self._ctl_halted = True
        self._ipc.halt()
        if self.state is OperatorState.RUNNING:
            self.state = OperatorState.HALTED
        return await self._after("halted", HookEvent.HALT)

    async def _resume(self) -> ControlResult:
        if not self._ctl_halted:
            return ControlResult(ok=True, message="not halted")
        self._ctl_halted = False
        if self.state is OperatorState.HALTED:  # while starting, on_start's end resumes
            self._ipc.resume()
            self.state = OperatorState.RUNNING
        return await self._after("resumed", HookEvent.RESUME)

    async def _reload(self) -> ControlResult:
        try:
            self._reload_settings()
        except ConfigError as exc:
            log_problems(self._log(), "reload rejected, settings unchanged", exc)
            return ControlResult(ok=False, message=str(exc))
        return await self._after("reloaded", HookEvent.RELOAD)

    async def _after(self, done: str, event: HookEvent) -> ControlResult:
        """Run the hooks of ``event``; the result says ``done`` and what failed."""
        errors = await self._hooks.run(event, self._log(), timeout=self._hook_timeout)
        if errors:
            return ControlResult(ok=False, message=f"{done}, but " + "; ".join(errors))
        return ControlResult(ok=True, message=done)
