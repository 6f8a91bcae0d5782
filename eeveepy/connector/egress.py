"""The egress pump: what a connector sends, in order, at the pace the platform tolerates.

A rendered message is one or more :class:`Outbound` items (IRC lines, XMPP stanzas, Matrix
events). They wait in a :class:`~eeveepy.connector.flood.FairQueue` (one FIFO per target,
served round-robin, so one busy room cannot starve the others) and leave through a
:class:`~eeveepy.connector.flood.TokenBucket`, only while the session is up. The queue is
capped: over the cap the oldest item of the longest queue is dropped, with a warning. A send
that fails for a passing reason is put back at the head of its queue and tried again; one the
platform refuses for good (:class:`~eeveepy.errors.RefusedError`) is dropped.

Each message has a completion future, set once its last item was sent (or dropped): the
:class:`~eeveepy.connector.outbox.Outbox` acknowledges the stream's copy of the message then,
so a message still queued when the connector dies is delivered again after its restart. A
platform whose server confirms receipt (XMPP stream management) returns a *confirmation* from
``send``: the pump goes on with the next item at once, and the message counts as sent only
when the confirmation of its last item completes, so one that was written but never reached
the server is delivered again too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from eeveepy.aio import cancel_and_wait, running_loop
from eeveepy.connector.flood import FairQueue, TokenBucket
from eeveepy.errors import ConnectorError, RefusedError

RETRY_DELAY = 0.05
"""Seconds before a send that failed for a passing reason is tried again."""


@dataclass(frozen=True)
class Outbound:
    """One platform send: ``text`` to ``target`` (a room, or a user when ``private``), as
    ``kind`` (the IRC command, the Matrix msgtype...), answering ``reply_to`` if given."""

    target: str
    text: str
    kind: str = ""
    private: bool = False
    reply_to: str | None = None


@dataclass(frozen=True)
class EgressLimits:
    """Flood control: ``rate`` sends per ``period`` seconds (0: no limit), ``burst`` at most
    at once; at most ``cap`` items queued (the oldest dropped beyond)."""

    rate: int = 0
    period: float = 1.0
    burst: int = 1
    cap: int = 5000

    def bucket(self, clock: Callable[[], float] = time.monotonic) -> TokenBucket:
        """A full token bucket of these limits."""
        return TokenBucket(self.rate, self.period, self.burst, clock)


Confirmation = Awaitable[None]
"""Completes once the platform's server confirmed an item (see :meth:`Platform.send`)."""
Send = Callable[[Outbound], Awaitable[Confirmation | None]]
SendNow = Callable[[Outbound], bool]
"""Sends an item at once if that needs no waiting (True), else nothing (False): see
:meth:`Platform.send_now`."""


def settle(done: asyncio.Future[None] | None) -> None:
    """Mark a message's completion future done (its last item was sent or dropped)."""
    if done is not None and not done.done():
        done.set_result(None)


class Egress:
    """The pump: queue (:meth:`put`), then ``send`` each item while ``ready`` is set.

    ``fold`` compares targets (a case-insensitive platform passes its folding); ``log`` is a
    structlog logger.
    """

    def __init__(
        self,
        send: Send,
        ready: asyncio.Event,
        log: Any,
        *,
        limits: EgressLimits | None = None,
        fold: Callable[[str], str] = str,
        clock: Callable[[], float] = time.monotonic,
        send_now: SendNow | None = None,
    ) -> None:
        self._send = send
        self._send_now = send_now
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sending = False
        """True while the pump has an item out of the queue (sending it, or about to)."""
        self._ready = ready
        self._log = log
        self._clock = clock
        self.limits = limits or EgressLimits()
        self._bucket = self.limits.bucket(clock)
        self._queue: FairQueue[tuple[Outbound, asyncio.Future[None] | None]] = FairQueue(fold)
        self._queued = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._confirming: set[asyncio.Future[None]] = set()
        self._on_settle: dict[asyncio.Future[None], Callable[[], None]] = {}

    def __len__(self) -> int:
        return len(self._queue)

    def retune(self, limits: EgressLimits) -> None:
        """Apply new limits (a reload): a new, full bucket; the queue cut down to the cap."""
        if limits.cap < 1:
            raise ConnectorError(f"invalid egress cap {limits.cap} (>= 1)")
        self._bucket = limits.bucket(self._clock)
        self.limits = limits
        while len(self._queue) > limits.cap:
            self._drop_oldest()

    def put(self, item: Outbound, done: asyncio.Future[None] | None = None) -> None:
        """Queue ``item``; ``done`` (if any) is settled once it is sent or dropped."""
        if len(self._queue) >= self.limits.cap:
            self._drop_oldest()
        self._queue.put(item.target, (item, done))
        self._queued.set()

    def put_message(
        self, items: list[Outbound], on_sent: Callable[[], None] | None = None
    ) -> asyncio.Future[None]:
        """Queue the items of one message; the future completes once the last is sent (or
        dropped). ``on_sent`` is called right then, before the pump sends anything else (the
        future's waiters only run later)."""
        self._loop = loop = running_loop(self._loop)
        done: asyncio.Future[None] = loop.create_future()
        if on_sent is not None:
            self._on_settle[done] = on_sent
        sent = self._send_at_once(items) if self._send_now is not None else 0
        if sent == len(items):
            self._settle(done)
        for n, item in enumerate(items[sent:], sent + 1):
            self.put(item, done if n == len(items) else None)
        return done

    def _send_at_once(self, items: list[Outbound]) -> int:
        """Send the first of ``items`` now, as the pump would, while nothing is queued or
        being sent, the session is up and flood control lets them go (no turn of the event
        loop waiting for the pump to wake); how many were sent."""
        send_now = self._send_now
        assert send_now is not None
        sent = 0
        for item in items:
            if self._sending or self._queue or not self._ready.is_set() or self._task is None:
                break
            if self._bucket.delay() > 0:
                break
            try:
                if not send_now(item):
                    break
            except Exception:  # the pump sends it and says what went wrong
                break
            self._bucket.try_take()
            sent += 1
        return sent

    def clear(self) -> None:
        """Drop everything queued (the network changed); the messages count as handled."""
        while (entry := self._queue.get()) is not None:
            self._settle(entry[1][1])

    def _settle(self, done: asyncio.Future[None] | None) -> None:
        if done is None:
            return
        hook = self._on_settle.pop(done, None)
        if hook is not None:
            hook()
        settle(done)

    def _drop_oldest(self) -> None:
        dropped = self._queue.drop_oldest()
        if dropped is None:
            return
        self._log.warning(
            "egress queue full: dropped the oldest item",
            target=dropped[0],
            limit=self.limits.cap,
        )
        self._settle(dropped[1][1])

    def start(self) -> None:
        """Start the pump (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._pump(), name="egress")

    async def stop(self) -> None:
        """Stop the pump; what is queued stays queued."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task, timeout=1.0)

    async def _pump(self) -> None:
        while True:
            await self._queued.wait()
            await self._ready.wait()
            delay = self._bucket.delay()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            entry = self._queue.get()
            if entry is None:
                self._queued.clear()
                continue
            target, (item, done) = entry
            self._bucket.try_take()
            self._sending = True
            try:
                sent, confirmation = await self._send_one(item)
                if not sent:
                    self._queue.put_front(target, (item, done))
                elif confirmation is None:
                    self._settle(done)
                else:
                    self._confirm(confirmation, done)
            finally:
                self._sending = False
            if not sent:
                await asyncio.sleep(RETRY_DELAY)

    def _confirm(self, confirmation: Confirmation, done: asyncio.Future[None] | None) -> None:
        """Settle ``done`` once ``confirmation`` completes (with a result or an error: a
        platform that cannot confirm any more says why itself); never when it is cancelled
        (the connector stopping): the stored copy is then delivered again after a restart."""
        waiting = asyncio.ensure_future(confirmation)
        self._confirming.add(waiting)
        waiting.add_done_callback(self._confirming.discard)
        waiting.add_done_callback(lambda fut: fut.cancelled() or fut.exception())
        if done is not None:

            def confirmed(fut: asyncio.Future[None]) -> None:
                if not fut.cancelled():
                    self._settle(done)

            waiting.add_done_callback(confirmed)

    async def _send_one(self, item: Outbound) -> tuple[bool, Confirmation | None]:
        """Send ``item``: ``(True, confirmation)`` when done with it (sent or refused),
        ``(False, None)`` to try again."""
        confirmation: Confirmation | None = None
        try:
            confirmation = await self._send(item)
        except RefusedError as exc:
            self._log.warning(
                "platform refused an item: dropped", target=item.target, error=str(exc)
            )
        except (ConnectorError, OSError, TimeoutError) as exc:
            # The platform logs why; the session is going down or back up.
            self._log.debug("send failed: will retry", target=item.target, error=str(exc))
            return False, None
        except Exception as exc:  # a bug in the platform: never retried forever
            self._log.exception("send crashed: dropped", target=item.target, error=repr(exc))
        return True, confirmation
