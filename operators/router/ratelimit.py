"""Rate limits of chat commands: sliding windows per user, room, command (pure: no I/O).

:func:`book` is what the router asks for each command line: :func:`limits_for` says which
limits the line counts against, :class:`RateLimiter` books them all or none (or a slot a
little later, in ``queue`` mode), and a refused user is told :func:`slow_down`, once per
window.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eeveepy.protocol.models import ChatMessage, CommandRegistration, RateLimit

from .settings import RouterSettings

__all__ = ["Booking", "RateLimiter", "Reservation", "book", "limits_for", "slow_down"]


@dataclass(frozen=True)
class Reservation:
    """The answer of :meth:`RateLimiter.reserve`."""

    ok: bool
    delay: float = 0.0
    """Seconds to wait before running (0 unless queueing); when refused, the wait needed."""
    binding: int = -1
    """Index of the limit that imposed the wait (or refused), -1 when none did."""


@dataclass
class _Window:
    period: float
    events: deque[float]


class RateLimiter:
    """Sliding-window limits: at most ``count`` events in any ``period`` seconds, per key."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._notified: dict[str, float] = {}
        self._calls = 0

    def reserve(
        self,
        limits: Sequence[tuple[str, RateLimit]],
        *,
        max_delay: float = 0.0,
        now: float | None = None,
    ) -> Reservation:
        """Take one slot in every ``(key, limit)``, at most ``max_delay`` seconds from now.

        All or nothing: when a limit would need a longer wait, nothing is recorded and the
        reservation is refused.
        """
        now = self._clock() if now is None else now
        self._calls += 1
        if self._calls % 1024 == 0:
            self._sweep(now)
        at, binding = now, -1
        for i, (key, limit) in enumerate(limits):
            window = self._window(key, limit.period, now)
            if len(window.events) >= limit.count:
                free = window.events[-limit.count] + limit.period
                if free > at:
                    at, binding = free, i
        delay = at - now
        if delay > max_delay:
            return Reservation(False, delay, binding)
        for key, limit in limits:
            self._window(key, limit.period, now).events.append(at)
        return Reservation(True, delay, binding)

    def notify_once(self, key: str, period: float, now: float | None = None) -> bool:
        """True at most once per ``period`` seconds per ``key`` (for "slow down" notices)."""
        now = self._clock() if now is None else now
        if self._notified.get(key, float("-inf")) > now:
            return False
        self._notified[key] = now + period
        return True

    def _window(self, key: str, period: float, now: float) -> _Window:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(period, deque())
        window.period = period
        events = window.events
        while events and events[0] <= now - period:
            events.popleft()
        return window

    def _sweep(self, now: float) -> None:
        for key in [
            k for k, w in self._windows.items() if not w.events or w.events[-1] <= now - w.period
        ]:
            del self._windows[key]
        for key in [k for k, until in self._notified.items() if until <= now]:
            del self._notified[key]

    def __len__(self) -> int:
        return len(self._windows)


def limits_for(
    settings: RouterSettings, msg: ChatMessage, user: str, reg: CommandRegistration | None
) -> tuple[list[tuple[str, RateLimit]], list[str]]:
    """The ``(key, limit)`` pairs a command line of ``user`` counts against, and for each what
    it counts, for the notice (see :func:`slow_down`).

    ``reg`` is the command when the user may run it: its own limit then applies too.
    """
    limits: list[tuple[str, RateLimit]] = []
    labels: list[str] = []
    if settings.user_rate:
        limits.append((f"user:{user}", settings.user_rate))
        labels.append("")
    if settings.room_rate:
        limits.append((f"room:{msg.platform}/{msg.network}/{msg.room}", settings.room_rate))
        labels.append(" in this room")
    if settings.global_rate:
        limits.append(("global", settings.global_rate))
        labels.append(" in all")
    if reg is not None and reg.rate_limit:
        limits.append((f"cmd:{reg.name}:{user}", reg.rate_limit))
        labels.append(f"`{reg.name}`")
    return limits, labels


def slow_down(limit: RateLimit, label: str) -> str:
    """The notice for a dropped command: ``label`` is a `name` or where the limit applies."""
    n, per = limit.count, f"per {limit.period:g} s"
    if label.startswith("`"):
        return f"slow down: at most {n} {label} {per}"
    return f"slow down: at most {n} command{'' if n == 1 else 's'} {per}{label}"


@dataclass(frozen=True)
class Booking:
    """The answer of :func:`book`."""

    ok: bool
    delay: float = 0.0
    """Seconds to wait before running the command."""
    notice: str = ""
    """When refused: what to tell the user ("" when they were told within the window)."""


def book(
    limiter: RateLimiter,
    settings: RouterSettings,
    msg: ChatMessage,
    user: str,
    reg: CommandRegistration | None,
) -> Booking:
    """Book a command line of ``user`` (``reg``: the command, when the user may run it)."""
    limits, labels = limits_for(settings, msg, user, reg)
    if not limits:
        return Booking(True)
    max_delay = settings.queue_max_delay if settings.rate_mode == "queue" else 0.0
    booked = limiter.reserve(limits, max_delay=max_delay)
    if booked.ok:
        return Booking(True, booked.delay)
    limit = limits[booked.binding][1]
    if limiter.notify_once(f"notice:{user}", limit.period):
        return Booking(False, notice=slow_down(limit, labels[booked.binding]))
    return Booking(False)
