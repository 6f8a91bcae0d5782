"""How long a connector waits before its next session: :func:`reconnect_delay`.

One jittered exponential backoff (:class:`~eeveepy.aio.Backoff`) with a connector's rules on
top: never sooner than the policy's ``initial`` (a server that just closed is not hammered,
jitter or not), back to the start after a healthy session, and slow after refused
credentials (they do not fix themselves, and a server may ban a host that keeps trying).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from eeveepy.aio import Backoff

AUTH_FLOOR: Final = 3
"""Backoff steps a refused login jumps to at least: retries start at 8x ``initial``."""


def reconnect_delay(
    backoff: Backoff,
    *,
    healthy: bool = False,
    auth_failed: bool = False,
    auth_floor: int = AUTH_FLOOR,
) -> float:
    """The delay before the next session, in ``[backoff.initial, backoff.maximum]``.

    ``healthy``: the session that ended had been up for a while, so this outage is a new one
    (the backoff starts again). ``auth_failed``: the platform refused the credentials, so the
    backoff jumps to at least ``auth_floor`` steps.
    """
    if healthy:
        backoff.reset()
    if auth_failed:
        backoff.attempt = max(backoff.attempt, auth_floor)
    return max(backoff.initial, backoff.next())


def backoff_delay(attempt: int, low: float, high: float, rnd: Callable[[], float]) -> float:
    """The delay before reconnect ``attempt`` (0-based) between ``low`` and ``high``, with the
    jitter ``rnd`` draws in ``[0, 1)``."""
    backoff = Backoff(low, high, rnd)
    backoff.attempt = attempt
    return reconnect_delay(backoff)
