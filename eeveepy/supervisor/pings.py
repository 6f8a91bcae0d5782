"""Health pings of one operator: the round trip, the misses in a row, the health it reports.

The supervisor sends ``{p}.operator.ping.<id>`` every ``ping_interval``, on a grid shared by
every operator with that interval (:func:`until_next_tick`): their pings go out together, so
the client writes them in one syscall and the replies wake the supervisor once, not fifty
times. ``max_missed_pings`` misses in a row mean the operator hangs; misses while the
supervisor's own connection is down or just back do not count.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from structlog.typing import FilteringBoundLogger

from eeveepy.bus.ipc import Ipc
from eeveepy.config import OperatorConfig
from eeveepy.protocol.models import Health, Ping, Pong

__all__ = ["Pinger", "until_next_tick"]


class Pinger:
    """Pings one operator and keeps what the answers said."""

    def __init__(self, ipc: Ipc, op_id: str, log: FilteringBoundLogger) -> None:
        self._ipc = ipc
        self._subject = ipc.subjects.operator_ping(op_id)
        self._log = log
        self.ping_ms: float | None = None
        """Round trip of the last answered ping, in milliseconds."""
        self.health: Health | None = None
        """The health the last pong reported."""
        self.problem = ""
        """What the last pong said is wrong, when degraded."""
        self.missed = 0
        """Pings missed in a row."""
        self._sent_at = 0.0

    def send(self, cfg: OperatorConfig) -> asyncio.Future[Any]:
        """Send one ping; the future holds the pong's envelope (or the request's error)."""
        self._sent_at = time.perf_counter()
        return asyncio.ensure_future(
            self._ipc.request(self._subject, Ping(), Pong, timeout=cfg.ping_timeout)
        )

    def answered(self, ping: asyncio.Future[Any], *, counts: bool) -> bool:
        """Take the outcome of a finished ``ping``; True when the health changed.

        A failed ping is a miss only when it ``counts`` (the supervisor's bus is settled).
        """
        try:
            pong: Pong = ping.result().body
        except Exception as exc:  # no pong, whatever the reason, is a missed ping
            if counts:
                self.missed += 1
                self._log.warning("missed ping", missed=self.missed, error=str(exc))
            return False
        self.ping_ms = (time.perf_counter() - self._sent_at) * 1000
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


def until_next_tick(interval: float) -> float:
    """Seconds until the next multiple of ``interval`` on the monotonic clock."""
    return interval - (time.monotonic() % interval)
