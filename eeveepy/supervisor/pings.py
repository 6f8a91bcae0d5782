"""Health pings: the round trip, the misses in a row, the health each operator reports.

The supervisor sends ``{p}.operator.ping.<id>`` every ``ping_interval`` to each running
operator, from one task per interval (:class:`PingRounds`) on a grid shared by every operator
with that interval (:func:`until_next_tick`): the pings of a round go out together, so the
client writes them in one syscall, and their replies come back on one subscription
(:mod:`~eeveepy.bus.replies`). An operator's own task is woken only when it hangs:
``max_missed_pings`` misses in a row. Misses while the supervisor's own connection is down or
just back do not count. (One task per operator waking at every tick, each ping a nats-py
request, was most of the supervisor's CPU at 200 operators.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger

from eeveepy.aio import cancel_and_wait
from eeveepy.bus.ipc import Ipc
from eeveepy.bus.replies import Replies
from eeveepy.config import OperatorConfig
from eeveepy.errors import EeveeError
from eeveepy.protocol.codec import EnvelopeDecoder
from eeveepy.protocol.models import Health, Ping, Pong

__all__ = ["PingRounds", "Pinger", "until_next_tick"]


class Pinger:
    """What the pings of one operator said."""

    def __init__(self, ipc: Ipc, op_id: str, log: FilteringBoundLogger) -> None:
        self.subject = ipc.subjects.operator_ping(op_id)
        self._log = log
        self.ping_ms: float | None = None
        """Round trip of the last answered ping, in milliseconds."""
        self.health: Health | None = None
        """The health the last pong reported."""
        self.problem = ""
        """What the last pong said is wrong, when degraded."""
        self.missed = 0
        """Pings missed in a row."""

    def answered(self, pong: Pong | None, rtt: float, error: str = "", *, counts: bool) -> bool:
        """Take the outcome of one ping (``pong`` None: missed, because of ``error``); True
        when the health changed. A missed ping is a miss only when it ``counts`` (the
        supervisor's bus is settled)."""
        if pong is None:
            if counts:
                self.missed += 1
                self._log.warning("missed ping", missed=self.missed, error=error)
            return False
        self.ping_ms = rtt * 1000
        self.missed = 0
        return self._note(pong)

    def reset(self) -> None:
        """Forget everything: the process is gone."""
        self.ping_ms, self.health, self.problem, self.missed = None, None, "", 0

    def _note(self, pong: Pong) -> bool:
        if (pong.health, pong.problem) == (self.health, self.problem):
            return False
        if pong.health is Health.DEGRADED and self.health is not Health.DEGRADED:
            self._log.warning("degraded", problem=pong.problem)
        elif self.health is Health.DEGRADED and pong.health is not Health.DEGRADED:
            self._log.info("healthy again")
        self.health, self.problem = pong.health, pong.problem
        return True


@dataclass(eq=False)
class _Pinged:
    """One operator in the rounds: its pinger, its limits, what to call when it hangs."""

    pinger: Pinger
    cfg: OperatorConfig
    on_hung: Callable[[], None]
    in_flight: bool = False


class PingRounds:
    """Pings every operator added, a round per ``ping_interval``; :meth:`stop` ends it."""

    def __init__(self, ipc: Ipc, *, settled: Callable[[], bool]) -> None:
        self._ipc = ipc
        self._settled = settled
        self._replies: Replies | None = None
        self._decoder = EnvelopeDecoder(Pong)
        self._groups: dict[float, dict[Pinger, _Pinged]] = {}
        self._tasks: dict[float, asyncio.Task[None]] = {}

    def add(self, pinger: Pinger, cfg: OperatorConfig, on_hung: Callable[[], None]) -> None:
        """Ping with ``cfg``'s interval and timeout from the next tick; ``on_hung`` once
        ``cfg.max_missed_pings`` are missed in a row."""
        pinger.missed = 0
        interval = cfg.ping_interval
        self._groups.setdefault(interval, {})[pinger] = _Pinged(pinger, cfg, on_hung)
        if interval not in self._tasks:
            self._tasks[interval] = asyncio.get_running_loop().create_task(
                self._run(interval), name=f"pings:{interval:g}"
            )

    def remove(self, pinger: Pinger) -> None:
        """Stop pinging (an answer still on its way is ignored)."""
        for group in self._groups.values():
            group.pop(pinger, None)

    async def stop(self) -> None:
        """Stop every round. Idempotent."""
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            await cancel_and_wait(task)
        self._groups.clear()
        replies, self._replies = self._replies, None
        if replies is not None:
            await replies.close()

    async def _run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(until_next_tick(interval))
            with contextlib.suppress(EeveeError):  # the client refused: each ping says why
                await self._round(list(self._groups.get(interval, {}).values()))

    async def _round(self, pinged: list[_Pinged]) -> None:
        if self._replies is None:
            self._replies = Replies(self._ipc.nc)
        for entry in pinged:
            if entry.in_flight:  # the last one is still waiting for its answer: no pile-up
                continue
            _, payload = self._ipc.encode(Ping())
            sent_at = time.perf_counter()
            fut = await self._replies.send(
                self._ipc.full(entry.pinger.subject), payload, timeout=entry.cfg.ping_timeout
            )
            entry.in_flight = True
            fut.add_done_callback(functools.partial(self._answered, entry, sent_at))

    def _answered(self, entry: _Pinged, sent_at: float, fut: asyncio.Future[bytes]) -> None:
        entry.in_flight = False
        if fut.cancelled():
            return
        rtt = time.perf_counter() - sent_at
        pong: Pong | None = None
        error = ""
        try:
            pong = self._decoder.decode(fut.result(), entry.pinger.subject).body
        except EeveeError as exc:  # no pong, whatever the reason, is a missed ping
            error = str(exc)
        if self._groups.get(entry.cfg.ping_interval, {}).get(entry.pinger) is not entry:
            return  # removed meanwhile: its process is gone
        pinger = entry.pinger
        pinger.answered(pong, rtt, error, counts=self._settled())
        if pinger.missed >= entry.cfg.max_missed_pings:
            self.remove(pinger)
            entry.on_hung()


def until_next_tick(interval: float) -> float:
    """Seconds until the next multiple of ``interval`` on the monotonic clock."""
    return interval - (time.monotonic() % interval)
