"""What an operator's process needs of its supervisor, as one object (:class:`ProcessHost`),
and the supervisor's implementation of it (:class:`SupervisorHost`): the bus watch, the
leases, the pings, the launcher and the shipping of the operators' output to the bus."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from structlog.typing import FilteringBoundLogger

from eeveepy.bus.buckets import BucketsUnderWay
from eeveepy.bus.ipc import Ipc
from eeveepy.config import OperatorConfig
from eeveepy.logs import LogShipper
from eeveepy.protocol.models import LogRecord
from eeveepy.supervisor.leases import Leases
from eeveepy.supervisor.pings import Pinger, PingRounds
from eeveepy.supervisor.placement import Placement
from eeveepy.supervisor.spawn import Child, Launcher

__all__ = ["BusHealth", "ProcessHost", "SupervisorHost"]

EARLY_LOGS = 1000
"""Log records kept until the bus is up to ship them (the oldest go first)."""


class BusHealth(Protocol):
    """The supervisor's view of its own bus connection (see :class:`~.buswatch.BusWatch`)."""

    @property
    def connected(self) -> bool: ...

    def settled(self) -> bool:
        """Connected long enough for a missed ping to say something about the operator."""
        ...


class ProcessHost(Protocol):
    """What an operator's process needs of its supervisor."""

    @property
    def bus(self) -> BusHealth: ...

    async def acquire_lease(self, op_id: str) -> str | None:
        """Hold the lease of ``op_id``: None when held, else who (or what) is in the way."""
        ...

    async def release_lease(self, op_id: str) -> None:
        """Give the lease back (quietly: it expires anyway)."""
        ...

    async def spawn(
        self, cfg: OperatorConfig, env: dict[str, str], cache_dir: Path, log: FilteringBoundLogger
    ) -> Child:
        """Start the process (see :meth:`~.spawn.Launcher.spawn`)."""
        ...

    def ship(self, record: LogRecord) -> None:
        """Publish a line of the operator's output as a log record (never blocks)."""
        ...

    def watch(self, pinger: Pinger, cfg: OperatorConfig, on_hung: Callable[[], None]) -> None:
        """Ping the running operator (see :meth:`~.pings.PingRounds.add`)."""
        ...

    def unwatch(self, pinger: Pinger) -> None:
        """Stop pinging it."""
        ...


class SupervisorHost:
    """The :class:`ProcessHost` of a supervisor's operators.

    ``leases`` is set once the bus is up (no leases before: every id is free); log records
    shipped before :meth:`start_shipping` wait, the last :data:`EARLY_LOGS` of them.
    """

    def __init__(self, bus: BusHealth, launcher: Launcher) -> None:
        self._bus = bus
        self.launcher = launcher
        self.leases: Leases | None = None
        self.placement: Placement | None = None
        """Takes leases over from supervisors that are gone, once set (with the leases)."""
        self.credentials: Callable[[OperatorConfig], Awaitable[dict[str, str]]] | None = None
        """Environment for a process about to start (its new bus secret), when set."""
        self._shipper: LogShipper | None = None
        self._early: deque[LogRecord] = deque(maxlen=EARLY_LOGS)
        self._pings: PingRounds | None = None
        self.buckets = BucketsUnderWay()
        """The operators' key-value buckets being made: a start waits for its own."""

    @property
    def bus(self) -> BusHealth:
        """The supervisor's own bus connection."""
        return self._bus

    async def acquire_lease(self, op_id: str) -> str | None:
        """Hold the lease of ``op_id``: None when held, else who (or what) is in the way."""
        if self.placement is not None:
            return await self.placement.acquire(op_id)
        return await self.leases.acquire(op_id) if self.leases is not None else None

    async def release_lease(self, op_id: str) -> None:
        """Give the lease of ``op_id`` back (quietly: it expires anyway)."""
        if self.leases is not None:
            await self.leases.release(op_id)

    async def spawn(
        self, cfg: OperatorConfig, env: dict[str, str], cache_dir: Path, log: FilteringBoundLogger
    ) -> Child:
        """Start ``cfg``'s process (see :meth:`Launcher.spawn`)."""
        await self.buckets.wait(cfg.id)
        if self.credentials is not None:
            env = {**env, **await self.credentials(cfg)}
        return await self.launcher.spawn(cfg, env, cache_dir, log)

    def ship(self, record: LogRecord) -> None:
        """Publish a log record on the bus (queued; never blocks, never raises)."""
        if self._shipper is not None:
            self._shipper.submit(record)
        else:
            self._early.append(record)

    def watch(self, pinger: Pinger, cfg: OperatorConfig, on_hung: Callable[[], None]) -> None:
        """Ping the running operator (see :meth:`~.pings.PingRounds.add`)."""
        if self._pings is not None:
            self._pings.add(pinger, cfg, on_hung)

    def unwatch(self, pinger: Pinger) -> None:
        """Stop pinging it."""
        if self._pings is not None:
            self._pings.remove(pinger)

    def start_pings(self, ipc: Ipc) -> None:
        """Ping through ``ipc`` the operators watched from now on."""
        self._pings = PingRounds(ipc, settled=self._bus.settled)

    async def stop_pings(self) -> None:
        """Stop pinging. Idempotent."""
        pings, self._pings = self._pings, None
        if pings is not None:
            await pings.stop()

    def start_shipping(self, ipc: Ipc) -> None:
        """Ship through ``ipc`` from now on, the records kept until now first."""
        self._shipper = LogShipper(ipc)
        for record in self._early:
            self._shipper.submit(record)
        self._early.clear()
        self._shipper.start()

    async def stop_shipping(self) -> None:
        """Stop shipping (what is queued is flushed, bounded). Idempotent."""
        shipper, self._shipper = self._shipper, None
        if shipper is not None:
            await shipper.stop()
