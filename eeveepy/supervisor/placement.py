"""Placement: which supervisor runs which operator when several share one bus.

Every supervisor of a system (one subject prefix) runs the operators placed on it: those whose
``hosts`` name it, or every operator without ``hosts``. An id still runs once per bus: the
supervisor holding its lease (:mod:`~eeveepy.supervisor.leases`) runs it, and the others
stand by (STOPPED, ``standby`` in ``eevee ps``), asking for the lease every second.

A lease expires a TTL after its last renewal, so a standby waiting for the expiry takes over
between 2/3 and the whole TTL after its holder died, plus its own start. :class:`Placement`
takes over sooner, and safely: a holder renews its leases every third of the TTL, so a
lease whose revision has not changed for half the TTL has missed a renewal; the standby then
asks the holder's supervisor for its status, and only when that goes unanswered too it
deletes the lease *at the revision it saw* (a renewal meanwhile makes the delete fail: the
holder lives) and takes it. A holder that was only cut off finds its lease taken at its next
renewal and stops its copy (``lease lost``), as it always did.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from nats.js.api import KeyValueConfig
from nats.js.client import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from structlog.typing import FilteringBoundLogger

from eeveepy.bus.buckets import ensure_bucket
from eeveepy.config import OperatorConfig
from eeveepy.supervisor.leases import Leases

__all__ = ["Placement", "ensure_leases_bucket", "placed_on"]

_HELD_BY = "supervisor "
""":meth:`Leases.acquire`'s answer when another supervisor holds the lease starts so."""


def placed_on(cfg: OperatorConfig, supervisor: str) -> bool:
    """Whether ``supervisor`` may run ``cfg``: it is among ``hosts``, or ``hosts`` is empty."""
    return not cfg.hosts or supervisor in cfg.hosts


async def ensure_leases_bucket(
    js: JetStreamContext, bucket: str, ttl: float, replicas: int
) -> None:
    """Create the leases bucket with ``replicas`` copies before :meth:`Leases.open` opens it
    (it would create it with one); an existing bucket is left as it is."""
    await ensure_bucket(js, KeyValueConfig(bucket=bucket, ttl=ttl, replicas=replicas))


class Placement:
    """This supervisor's leases, taken over from a holder that is gone.

    ``probe(name)`` asks supervisor ``name`` whether it is alive (True: it answered; see
    :func:`~eeveepy.supervisor.control.probe`).
    """

    def __init__(
        self,
        leases: Leases,
        probe: Callable[[str], Awaitable[bool]],
        *,
        log: FilteringBoundLogger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.leases = leases
        self._probe = probe
        self._log = log
        self._clock = clock
        self._seen: dict[str, tuple[int, float]] = {}  # id -> (revision, first seen)
        self.standby: dict[str, str] = {}
        """Operator ids this supervisor stands by for, and who runs each."""

    @property
    def stale_after(self) -> float:
        """Seconds without a renewal after which a holder may be gone: half the TTL."""
        return self.leases.ttl / 2

    async def acquire(self, op_id: str) -> str | None:
        """Take the lease of ``op_id`` (see :meth:`Leases.acquire`), from a holder that is
        gone too; None when held, else who (or what) is in the way."""
        in_the_way = await self.leases.acquire(op_id)
        held_by = in_the_way is not None and in_the_way.startswith(_HELD_BY)
        if held_by and await self._take_over(op_id):
            in_the_way = await self.leases.acquire(op_id)
        if in_the_way is None:
            self.forget(op_id)
        elif in_the_way.startswith(_HELD_BY):
            self.standby[op_id] = in_the_way.removeprefix(_HELD_BY)
        return in_the_way

    def forget(self, op_id: str) -> None:
        """``op_id`` no longer runs here (removed, or placed elsewhere by a reload)."""
        self.standby.pop(op_id, None)
        self._seen.pop(op_id, None)

    async def _take_over(self, op_id: str) -> bool:
        """Delete the lease of a holder that stopped renewing it and does not answer; True
        when deleted."""
        kv = self.leases.kv
        try:
            entry = await kv.get(op_id)
        except KeyNotFoundError:
            return True  # gone meanwhile: try again at once
        except Exception:  # the bus is busy or away: the next attempt will tell
            return False
        holder = (entry.value or b"").decode()
        revision = entry.revision or 0
        now = self._clock()
        seen = self._seen.get(op_id)
        if seen is None or seen[0] != revision:
            self._seen[op_id] = (revision, now)
            return False
        silent = now - seen[1]
        if not holder or holder == self.leases.holder or silent < self.stale_after:
            return False
        if await self._probe(holder):
            self._seen[op_id] = (revision, now)  # alive (the bus was slow): wait again
            return False
        try:
            await kv.delete(op_id, last=revision)
        except KeyWrongLastSequenceError:
            return False  # renewed meanwhile: the holder lives
        except Exception:
            return False
        self._log.warning(
            "taking over: its supervisor stopped renewing the lease and does not answer",
            operator=op_id,
            holder=holder,
            silent_s=round(silent, 3),
        )
        return True
