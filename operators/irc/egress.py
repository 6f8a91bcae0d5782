"""Egress flood control: a token bucket, a per-target fair queue and the pump between them.

Every PRIVMSG / NOTICE line the connector sends for the bus goes through :class:`Egress`: a
rate limit with bursts (:class:`TokenBucket`), round-robin across targets with FIFO order per
target (:class:`FairQueue`, so one busy channel cannot starve the others), a cap on what is
kept while the server is slow or away (the oldest line is dropped, with a warning), and a
line put back at the head of its queue when it could not be written.

Nothing here is IRC-specific but the error class; the connector kit's egress takes its place
when the IRC connector moves onto the kit.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Final, Generic, NamedTuple, TypeVar

from structlog.typing import FilteringBoundLogger

from eeveepy.errors import IrcTextError

__all__ = ["MAX_QUEUED_LINES", "Egress", "FairQueue", "Outbound", "TokenBucket"]

MAX_QUEUED_LINES: Final = 5000
"""Egress lines kept while the server is slow or away; beyond that the oldest are dropped
(with a warning)."""
RETRY_AFTER: Final = 0.05
"""Seconds before a line that could not be written is tried again."""

T = TypeVar("T")


class Outbound(NamedTuple):
    """One line to send: ``command target :text`` (PRIVMSG or NOTICE)."""

    command: str
    target: str
    text: str


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
            raise IrcTextError(
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
    kept. Targets are compared by a key (default: as given; the connector passes
    :func:`irc_lower`).
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


_Item = tuple[Outbound, asyncio.Future[None] | None]


def _settle(done: asyncio.Future[None] | None) -> None:
    """Mark a queued message's last line as handled (written or dropped)."""
    if done is not None and not done.done():
        done.set_result(None)


class Egress:
    """The queue of lines waiting to be sent, and the task that sends them when allowed.

    ``send`` writes one line and says whether it was written; ``ready`` is set while lines may
    be sent (the connection is registered); ``key`` compares targets (the server's case
    mapping); ``log`` returns the operator's current logger.
    """

    def __init__(
        self,
        send: Callable[[Outbound], Awaitable[bool]],
        ready: asyncio.Event,
        key: Callable[[str], str],
        log: Callable[[], FilteringBoundLogger],
        *,
        limit: int = MAX_QUEUED_LINES,
    ) -> None:
        self.bucket = TokenBucket(0, 1.0, 1)
        self._send = send
        self._ready = ready
        self._log = log
        self._limit = limit
        self._queue: FairQueue[_Item] = FairQueue(key)
        self._queued = asyncio.Event()

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, line: Outbound, done: asyncio.Future[None] | None = None) -> None:
        """Queue one line behind flood control (never dropped silently); ``done`` is set once
        it is written (or dropped)."""
        if len(self._queue) >= self._limit:
            dropped = self._queue.drop_oldest()
            self._log().warning(
                "irc egress queue full: dropped the oldest line",
                target=dropped[0] if dropped else None,
                limit=self._limit,
            )
            if dropped is not None:
                _settle(dropped[1][1])
        self._queue.put(line.target, (line, done))
        self._queued.set()

    def put_all(self, lines: list[Outbound]) -> asyncio.Future[None]:
        """Queue ``lines`` (one message); the future is done once the last was written or
        dropped (at once when there is none)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not lines:
            done.set_result(None)
        last = len(lines) - 1
        for n, line in enumerate(lines):
            self.put(line, done if n == last else None)
        return done

    def clear(self) -> None:
        """Drop everything queued. Waiters are not released: their messages were not sent (the
        outbox cancels them, and what it took from the stream is delivered again)."""
        self._queue.clear()

    async def run(self) -> None:
        """Send queued lines as fast as the bucket allows, while ``ready``; runs until
        cancelled."""
        while True:
            await self._queued.wait()
            await self._ready.wait()
            delay = self.bucket.delay()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            item = self._queue.get()
            if item is None:
                self._queued.clear()
                continue
            target, (line, done) = item
            self.bucket.try_take()
            if await self._send(line):
                _settle(done)
            else:
                self._queue.put_front(target, (line, done))
                await asyncio.sleep(RETRY_AFTER)
