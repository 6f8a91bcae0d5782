"""The backstop of a subscription: a stream's copies of what the fast path already handles.

A receiver that must not lose a message (the router's chat input, a connector's output) takes
its subject twice: at once on a plain subscription (the fast path) and from the stream that
stores it through a durable consumer (the backstop), for what was published while it was
down or lost in its crash. In steady state the fast copy has been handled, or is being
handled, when the stream's copy arrives, so the backstop does not handle copies one by one:
the connection's reader only keeps each copy (no task woken, nothing decoded), and a tick
(:data:`TICK`) after the first one came the backstop looks at what it kept, in stream order,
by envelope id (the ``Nats-Msg-Id`` header) against the receiver's
:class:`~eeveepy.bus.delivery.Once`:

- seen on the fast path and done: acknowledged;
- seen and still in progress (a command running): kept, and kept alive with progress
  acknowledgements, until done;
- never seen and stored more than :data:`GRACE` seconds ago, or before the backstop started
  (published while the receiver was down): lost on the fast path, so handled here, from the
  stream's copy; the dead-lettering of a copy delivered
  :data:`~eeveepy.bus.delivery.MAX_DELIVER` times (one that took every receiver down) and of
  one whose handler keeps failing happens here too.

The acknowledgements of one pass leave in one write. They stay one per message: the chat
streams are work queues, whose consumers nats-server accepts with explicit acknowledgements
only. A receiver restarted has nothing in its ``Once``, so everything not acknowledged is
delivered again and handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from dataclasses import dataclass

from nats.aio.client import Client as NatsClient

from eeveepy.bus.delivery import MAX_DELIVER, PROGRESS_EVERY, Once, ack_meta
from eeveepy.bus.dispatch import Dispatch, Handler, SubscriptionStats, received, resolve_decoder
from eeveepy.bus.provenance import Provenance
from eeveepy.errors import EnvelopeError

__all__ = ["BUSY", "GRACE", "TICK", "Backstop", "Copy", "msg_id_of", "pause"]

TICK = 0.5
"""Seconds from the first copy kept to the pass that settles it (and between passes while
copies are left)."""
GRACE = 2.0
"""Seconds a copy never seen on the fast path waits for it before it is handled from the stream."""
BUSY = 256
"""Copies waiting from which passes come ten times as often: the server delivers at most
``MAX_ACK_PENDING`` unacknowledged copies, so a pass every :data:`TICK` would let the stream's
copies fall ever further behind a fast path busier than ~2,000 lines a second, until the
receiver's ``Once`` had forgotten the lines they copy and they were handled again."""
LIMIT = 8192
"""Copies kept at once; more are dropped (and delivered again after the ack wait)."""


@dataclass(slots=True)
class Copy:
    """One stream copy kept by a :class:`Backstop` until it is acknowledged."""

    seq: int
    reply: str
    subject: str
    data: bytes
    msg_id: str
    stored: float
    attempt: int
    progressed: float
    failures: int = 0


def pause(waiting: int) -> float:
    """Seconds before the next pass, with ``waiting`` copies kept."""
    return TICK if waiting < BUSY else TICK / 10


def msg_id_of(headers: bytes) -> str:
    """The ``Nats-Msg-Id`` of a raw NATS header block; "" without one."""
    start = headers.find(b"\r\nNats-Msg-Id:")
    if start < 0:
        return ""
    start += 14
    end = headers.find(b"\r\n", start)
    return headers[start : end if end >= 0 else None].strip().decode(errors="replace")


class Backstop:
    """The copies of one backstop subscription, and the task that settles them.

    ``handler`` handles a copy the fast path never saw; ``once`` is the receiver's (None: every
    copy is handled after the grace, the handler drops repeats itself).
    """

    def __init__(
        self,
        dispatch: Dispatch,
        nc: NatsClient,
        handler: Handler,
        once: Once | None,
        stats: SubscriptionStats,
        gated: bool = True,
    ) -> None:
        self.dispatch = dispatch
        self.nc = nc
        self.handler = handler
        self.once = once
        self.stats = stats
        self.gated = gated
        self.copies: dict[int, Copy] = {}
        self._decoder, self._want_envelope = resolve_decoder(handler)
        self._provenance = Provenance(dispatch.ipc.subjects.prefix + ".")
        self._wake = asyncio.Event()
        self._started = time.time()

    # -- receiving (on the connection's reader: never blocks) -------------------------------

    def push_raw(self, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        """Keep one delivered copy (the connection's fast path)."""
        self.push(subject.decode(), reply.decode(), data, msg_id_of(headers))

    def push(self, subject: str, reply: str, data: bytes, msg_id: str) -> None:
        """Keep one delivered copy; a redelivery replaces the copy of the same sequence."""
        meta = ack_meta(reply)
        if meta is None:
            return
        _, attempt, seq, stored = meta
        self.stats.received += 1
        kept = self.copies.get(seq)
        if kept is not None:
            kept.reply, kept.attempt = reply, attempt
            return
        if len(self.copies) >= LIMIT:
            self.stats.dropped += 1
            return
        now = time.monotonic()
        self.copies[seq] = Copy(seq, reply, subject, data, msg_id, stored, attempt, now)
        self._wake.set()

    # -- settling --------------------------------------------------------------------------

    async def run(self) -> None:
        """Settle what came, a tick after it came, until cancelled."""
        log = self.dispatch.ipc.log
        while True:
            await self._wake.wait()
            await asyncio.sleep(pause(len(self.copies)))
            self._wake.clear()
            try:
                await self.settle()
            except Exception as exc:  # a bug of ours must not end the backstop
                log.exception("backstop pass failed", error=repr(exc))
            if self.copies:
                self._wake.set()

    async def settle(self, *, last: bool = False) -> None:
        """One pass: handle what the fast path lost, acknowledge what is done (one write).

        ``last`` (the subscription is stopping): only acknowledge what is done, and flush.
        """
        now = time.monotonic()
        wall = time.time()
        for seq in sorted(self.copies):
            copy = self.copies[seq]
            if await self._settle(copy, wall, recover=not last):
                del self.copies[seq]
                await self._send(copy.reply, b"+ACK")
            elif not last and now - copy.progressed >= PROGRESS_EVERY:  # not delivered again
                copy.progressed = now
                await self._send(copy.reply, b"+WPI")
        if last:
            with contextlib.suppress(Exception):  # bounded; what is lost is delivered again
                await self.nc.flush(timeout=1)

    async def _send(self, reply: str, body: bytes) -> None:
        try:
            await self.nc.publish(reply, body)
        except Exception as exc:  # the bus is away: delivered again, and settled then
            self.dispatch.ipc.log.warning("could not acknowledge", error=repr(exc))

    async def _settle(self, copy: Copy, wall: float, *, recover: bool = True) -> bool:
        """True once ``copy`` needs nothing more (done on the fast path, or here)."""
        once = self.once
        if not copy.msg_id and once is not None:  # published without Nats-Msg-Id: decode it
            with contextlib.suppress(EnvelopeError):
                copy.msg_id = self._decoder.decode(copy.data, copy.subject).id
        if copy.msg_id and once is not None:
            handling = once.peek(copy.msg_id)
            if handling is not None:
                return handling.done
        if not recover or (wall - copy.stored < GRACE and copy.stored >= self._started):
            return False  # the fast copy is still on its way (or the backstop is stopping)
        return await self._recover(copy)

    async def _recover(self, copy: Copy) -> bool:
        """Handle ``copy`` from the stream; True once done (handled, or dead-lettered)."""
        dispatch, once = self.dispatch, self.once
        env, problem = received(
            copy.data, copy.subject, self._decoder.decode, dispatch.max_inbound, self._provenance
        )
        if problem is None and copy.attempt >= MAX_DELIVER:
            problem = f"delivered {copy.attempt} times and never acknowledged"
        if problem is None and copy.failures >= MAX_DELIVER:
            problem = f"handler failed on each of {copy.failures} tries"
        if problem is not None:
            await dispatch.reject(self.stats, copy.subject, "", copy.data, problem)
            return True
        if self.gated and dispatch.gate.closed:
            return False  # halted: handled once resumed
        token = dispatch.ipc.handling.set(("", env, None))
        try:
            result = self.handler(env if self._want_envelope else env.body)
            if inspect.isawaitable(result):
                await result
            self.stats.handled += 1
        except Exception as exc:
            self.stats.failed += 1
            copy.failures += 1
            await dispatch.failed(self.handler, copy.subject, "", env, exc)
            return False
        finally:
            dispatch.ipc.handling.reset(token)
        seen = once.peek(env.id) if once is not None else None
        return seen is None or seen.done

    async def close(self) -> None:
        """Acknowledge what is done, then forget the rest (it is delivered again)."""
        if self.copies and not self.nc.is_closed:
            await self.settle(last=True)
        self.copies.clear()
