"""Flood control, platform-neutral: a token bucket and a per-target fair queue.

Both are pure (no I/O, an injectable clock) so that every connector's egress
(:mod:`eeveepy.connector.egress`) rests on the same tested pieces.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Generic, TypeVar

from eeveepy.errors import ConnectorError

T = TypeVar("T")


class TokenBucket:
    """A token bucket: ``rate`` tokens per ``period`` seconds, holding at most ``burst``.

    ``rate = 0`` disables the limit (:meth:`delay` is always 0). ``clock`` returns seconds
    (default :func:`time.monotonic`); inject a fake one in tests. The bucket starts full.
    """

    def __init__(
        self,
        rate: int,
        period: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate < 0 or burst < 1 or not period > 0:
            raise ConnectorError(
                f"invalid token bucket: rate={rate} (>= 0), period={period} (> 0), "
                f"burst={burst} (>= 1)"
            )
        self.rate = rate
        self.period = period
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    @property
    def enabled(self) -> bool:
        """False when the bucket lets everything through (``rate == 0``)."""
        return self.rate > 0

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate / self.period)

    @property
    def tokens(self) -> float:
        """Tokens available now."""
        if not self.enabled:
            return float(self.burst)
        self._refill()
        return self._tokens

    def delay(self) -> float:
        """Seconds until a token is available (0 when one is available now)."""
        if not self.enabled:
            return 0.0
        self._refill()
        if self._tokens >= 1.0:
            return 0.0
        return (1.0 - self._tokens) * self.period / self.rate

    def try_take(self) -> bool:
        """Take a token if one is available now; return whether it was taken."""
        if not self.enabled:
            return True
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class FairQueue(Generic[T]):
    """Per-target FIFO queues served round-robin.

    :meth:`put` appends to its target's queue; :meth:`get` takes the oldest item of the next
    target in turn, so a busy target cannot starve the others while each target's order is
    kept. Targets are compared by a key (default: as given; a platform whose names are
    case-insensitive passes its folding, e.g. IRC's casemapping).
    """

    def __init__(self, key: Callable[[str], str] = str) -> None:
        self._key = key
        self._queues: OrderedDict[str, deque[tuple[str, T]]] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    @property
    def targets(self) -> list[str]:
        """Keys of the targets with queued items, next to be served first."""
        return list(self._queues)

    def put(self, target: str, item: T) -> None:
        """Queue ``item`` for ``target``."""
        key = self._key(target)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append((target, item))
        self._size += 1

    def get(self) -> tuple[str, T] | None:
        """``(target, item)``: the next item in round-robin order, or None when empty."""
        if not self._queues:
            return None
        key, queue = next(iter(self._queues.items()))
        target, item = queue.popleft()
        self._size -= 1
        if queue:
            self._queues.move_to_end(key)
        else:
            del self._queues[key]
        return target, item

    def put_front(self, target: str, item: T) -> None:
        """Put ``item`` back at the head of its target's queue, that target served next."""
        key = self._key(target)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.appendleft((target, item))
        self._queues.move_to_end(key, last=False)
        self._size += 1

    def drop_oldest(self) -> tuple[str, T] | None:
        """Remove and return the oldest item of the longest queue (to bound memory)."""
        if not self._queues:
            return None
        key = max(self._queues, key=lambda k: len(self._queues[k]))
        queue = self._queues[key]
        target, item = queue.popleft()
        self._size -= 1
        if not queue:
            del self._queues[key]
        return target, item

    def clear(self) -> None:
        """Drop everything queued."""
        self._queues.clear()
        self._size = 0
