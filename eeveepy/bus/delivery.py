"""At-least-once delivery for the ipc layer: stored publishes and durable consumers.

Two halves, both on JetStream and both optional (without a stream the ipc layer falls back to
plain NATS, at most once, and says so):

- :func:`publish_stored` publishes a message as a JetStream publish and returns only once the
  stream has acknowledged it, re-sending (same ``Nats-Msg-Id``, so the stream stores it once)
  while the bus is away, within a deadline.
- :func:`open_consumer` makes a durable push consumer on the stream that stores a subscription's
  subjects; the ipc layer then acknowledges each message after its handler returned, or the
  handler takes the acknowledgement over with ``ipc.hold()`` (a :class:`Delivery`) to
  acknowledge later. Deliveries being handled are kept alive with progress acknowledgements
  (:class:`Deliveries`), so only a dead receiver's messages are delivered again.

:class:`Once` lets a receiver take a subject both on the fast path and from its stream and
handle each message once; :class:`Handling` says when the work is done, for the backstop
(:mod:`eeveepy.bus.backstop`) to acknowledge the stream's copy.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

import structlog
from nats.aio.client import Client as NatsClient
from nats.errors import ConnectionClosedError, ConnectionDrainingError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError, NotFoundError

from eeveepy.bus.names import deliver_subject
from eeveepy.bus.natsadapter import bus_error
from eeveepy.errors import BusError, DeliveryError

ACK_WAIT = 5.0
"""Seconds the server waits for an acknowledgement before delivering a message again."""
PROGRESS_EVERY = 2.0
"""Seconds between progress acknowledgements of a delivery still being handled."""
MAX_DELIVER = 10
"""Deliveries of one message; the last one is dead-lettered instead of handled."""
MAX_ACK_PENDING = 1024
"""Messages delivered and not yet acknowledged, per consumer."""
RECENT = 4096
"""Acknowledged stream sequences remembered per consumer, to drop late redeliveries."""


class AckMeta(NamedTuple):
    """What a JetStream delivery's reply subject says of it."""

    consumer: str
    attempt: int
    """Deliveries of the message so far (1 for the first)."""
    seq: int
    """Its stream sequence."""
    stored: float
    """When the stream stored it (epoch seconds)."""


def ack_meta(reply: str) -> AckMeta | None:
    """The :class:`AckMeta` of a JetStream delivery's reply subject; None for anything else.

    Both forms are understood: ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>...``
    (9 tokens) and the one with domain and account hash (11 or 12 tokens).
    """
    tokens = reply.split(".")
    at = 4 if len(tokens) == 9 else 6 if len(tokens) >= 11 else 0
    if not at or tokens[0] != "$JS" or tokens[1] != "ACK":
        return None
    try:
        return AckMeta(
            tokens[at - 1], int(tokens[at]), int(tokens[at + 1]), int(tokens[at + 3]) / 1e9
        )
    except ValueError:
        return None


class Delivery:
    """One message delivered by a durable consumer, until it is acknowledged.

    ``attempt`` counts deliveries (1 for the first); ``last`` is True on the last one the
    server will make. ``held`` is set when a handler took the acknowledgement over.
    """

    __slots__ = ("_owner", "attempt", "held", "key", "last", "since", "subject")

    def __init__(self, owner: Deliveries, subject: str, key: tuple[str, int], attempt: int):
        self._owner = owner
        self.subject = subject
        self.key = key
        self.attempt = attempt
        self.last = attempt >= MAX_DELIVER
        self.held = False
        self.since = time.monotonic()

    @property
    def done(self) -> bool:
        """True once acknowledged (or refused) either way."""
        return self._owner.inflight.get(self.key) is not self

    async def ack(self) -> None:
        """Done with it: the server forgets the message (idempotent)."""
        await self._finish(b"+ACK", remember=True)

    async def nak(self, delay: float = 0.0) -> None:
        """Not handled: deliver it again (after ``delay`` seconds)."""
        body = (
            b"-NAK" if delay <= 0 else b"-NAK " + json.dumps({"delay": int(delay * 1e9)}).encode()
        )
        await self._finish(body, remember=False)

    async def term(self) -> None:
        """Never deliver it again (it was dead-lettered)."""
        await self._finish(b"+TERM", remember=True)

    async def _finish(self, body: bytes, *, remember: bool) -> None:
        if self.done:
            return
        self._owner.end(self, remember=remember)
        try:
            await self._owner.nc.publish(self.subject, body)
        except Exception as exc:  # the bus is gone: the server delivers it again later
            self._owner.log.warning("could not acknowledge", error=repr(exc))


class Deliveries:
    """The deliveries an :class:`~eeveepy.bus.ipc.Ipc` is handling, kept alive while they last."""

    def __init__(self, nc: NatsClient, log: Any = None) -> None:
        self.nc = nc
        self.log = log if log is not None else structlog.get_logger("eeveepy.delivery")
        self.inflight: dict[tuple[str, int], Delivery] = {}
        self._recent: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._ticker: asyncio.Task[None] | None = None

    def begin(self, reply: str) -> Delivery | None:
        """Track the delivery whose reply subject is ``reply``; None for a duplicate of one
        being handled or just acknowledged (a redelivery that crossed our acknowledgement)."""
        meta = ack_meta(reply)
        if meta is None:
            return None
        key = (meta.consumer, meta.seq)
        if key in self.inflight or key in self._recent:
            return None
        delivery = self.inflight[key] = Delivery(self, reply, key, meta.attempt)
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="ipc:acks")
        return delivery

    async def repeat(self, reply: str) -> None:
        """A delivery :meth:`begin` refused: acknowledge it again when it was already done
        (the first acknowledgement was lost, e.g. with the bus), else leave it to the copy
        being handled."""
        meta = ack_meta(reply)
        if meta is None or (meta.consumer, meta.seq) not in self._recent:
            return
        try:
            await self.nc.publish(reply, b"+ACK")
        except Exception as exc:  # still away: it comes again, and is acknowledged then
            self.log.warning("could not acknowledge", error=repr(exc))

    def end(self, delivery: Delivery, *, remember: bool) -> None:
        self.inflight.pop(delivery.key, None)
        if remember:
            self._recent[delivery.key] = None
            if len(self._recent) > RECENT:
                self._recent.popitem(last=False)

    async def _tick(self) -> None:
        while self.inflight:
            await asyncio.sleep(PROGRESS_EVERY)
            old = time.monotonic() - PROGRESS_EVERY
            for delivery in list(self.inflight.values()):
                if delivery.since <= old:
                    try:
                        await self.nc.publish(delivery.subject, b"+WPI")
                    except Exception:  # disconnected: it will be delivered again anyway
                        break

    async def close(self) -> None:
        """Stop keeping deliveries alive (those not acknowledged will be delivered again)."""
        task, self._ticker = self._ticker, None
        self.inflight.clear()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@dataclass
class Handling:
    """One message being handled; its stream copy is acknowledged once :attr:`done`."""

    done: bool = True

    def start(self) -> Handling:
        """Mark it in progress (its stream copy waits in the backstop)."""
        self.done = False
        return self

    async def finish(self) -> None:
        """Done (call it once the answer is stored or sent): the backstop acknowledges the
        stream's copy at its next pass."""
        self.done = True


class Once:
    """Messages handled once per process by envelope id, whichever copy comes first.

    A receiver that takes a subject both on the fast path (a plain subscription) and from
    the stream that keeps it (a durable one) sees each message twice; :meth:`take` says
    whether this copy is the first, and gives the :class:`Handling` both copies share.
    """

    def __init__(self, limit: int = 8192) -> None:
        self._limit = limit
        self._seen: OrderedDict[str, Handling] = OrderedDict()

    def take(self, msg_id: str) -> tuple[Handling, bool]:
        """``(handling, first)`` for the message ``msg_id``."""
        handling = self._seen.get(msg_id)
        if handling is not None:
            return handling, False
        handling = self._seen[msg_id] = Handling()
        if len(self._seen) > self._limit:
            self._seen.popitem(last=False)
        return handling, True

    def peek(self, msg_id: str) -> Handling | None:
        """The handling of ``msg_id`` if a copy of it was taken, else None (nothing taken)."""
        return self._seen.get(msg_id)


async def open_consumer(
    nc: NatsClient, prefix: str, pattern: str, durable: str, timeout: float = 5.0
) -> str | None:
    """Create (or reuse) the durable push consumer ``durable`` for ``pattern``.

    Returns the subject to queue-subscribe (group ``durable``) to receive its messages, or
    None when no stream stores ``pattern``.
    """
    js = nc.jetstream(timeout=timeout)
    try:
        stream = await js.find_stream_name_by_subject(pattern)
    except NotFoundError:
        return None
    except Exception as exc:  # JetStream disabled or not reachable
        raise BusError(f"cannot look up the stream of {pattern}: {exc}") from None
    subject = deliver_subject(prefix, stream, durable)
    config = ConsumerConfig(
        durable_name=durable,
        deliver_subject=subject,
        deliver_group=durable,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT,
        max_deliver=MAX_DELIVER,
        max_ack_pending=MAX_ACK_PENDING,
        filter_subject=pattern,
    )
    try:
        try:
            await js.add_consumer(stream, config)
        except BadRequestError:  # it exists with another configuration: replace it
            await js.delete_consumer(stream, durable)
            await js.add_consumer(stream, config)
    except Exception as exc:
        raise BusError(f"cannot create consumer {durable} on {stream}: {exc}") from None
    return subject


class StreamFinder:
    """Which stream stores a subject, asked once and remembered (misses for a while only)."""

    MISS_TTL = 30.0

    def __init__(self) -> None:
        self._known: dict[str, tuple[str | None, float]] = {}

    async def lookup(self, nc: NatsClient, subject: str) -> str | None:
        now = time.monotonic()
        hit = self._known.get(subject)
        if hit is not None and (hit[0] is not None or now - hit[1] < self.MISS_TTL):
            return hit[0]
        try:
            stream: str | None = await nc.jetstream(timeout=2.0).find_stream_name_by_subject(
                subject
            )
        except NotFoundError:
            stream = None
        except (ConnectionClosedError, ConnectionDrainingError) as exc:
            raise bus_error(exc, subject) from None
        except Exception as exc:
            raise BusError(f"cannot look up the stream of {subject}: {exc}") from None
        if len(self._known) >= 1024:
            self._known.clear()
        self._known[subject] = (stream, now)
        return stream

    def forget(self, subject: str) -> None:
        self._known.pop(subject, None)


async def publish_stored(
    nc: NatsClient,
    subject: str,
    payload: bytes,
    msg_id: str,
    stream: str,
    *,
    timeout: float = 2.0,
    deadline: float = 30.0,
) -> int:
    """Publish to ``stream`` and wait for its acknowledgement; the stream sequence.

    Re-sends with the same ``Nats-Msg-Id`` (stored once within the stream's duplicate window)
    after a timeout or while the bus is away, until ``deadline`` seconds have passed; then
    raises :class:`DeliveryError` with the last reason.
    """
    from eeveepy.bus.replies import replies_of
    from eeveepy.errors import (
        BusClosedError,
        NoRespondersError,
        OutboundBufferFullError,
        RequestTimeoutError,
    )

    headers = stored_headers(msg_id, stream)
    replies = replies_of(nc)  # one reply subscription and one timer for every request
    end = time.monotonic() + deadline
    delay = 0.05
    while True:
        try:
            data = await replies.request(subject, payload, timeout=timeout, headers=headers)
        except NoRespondersError:
            why = f"no stream stores {subject}"
        except RequestTimeoutError:
            why = f"no acknowledgement within {timeout:g} s"
        except OutboundBufferFullError:
            why = "the bus is away and the outgoing buffer is full"
        except BusClosedError:
            raise DeliveryError(subject, "the bus connection is closed") from None
        else:
            seq, why = read_receipt(data)
            if not why:
                return seq
        if time.monotonic() + delay > end:
            raise DeliveryError(subject, why)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


def stored_headers(msg_id: str, stream: str) -> dict[str, str]:
    """The headers of a stored publish of the envelope ``msg_id`` into ``stream``."""
    return {"Nats-Msg-Id": msg_id, "Nats-Expected-Stream": stream}


def receipt_problem(data: bytes) -> str:
    """What is wrong with a JetStream publish answer; "" for a good acknowledgement."""
    return read_receipt(data)[1]


def read_receipt(data: bytes) -> tuple[int, str]:
    """A JetStream publish answer read once: ``(stream sequence, "")`` for a good
    acknowledgement, ``(0, what is wrong)`` for anything else."""
    try:
        resp = json.loads(data)
    except ValueError:
        return 0, "the answer is not JSON"
    if not isinstance(resp, dict):
        return 0, "the answer is not an object"
    error = resp.get("error")
    if isinstance(error, dict):
        return 0, str(error.get("description") or error)
    seq = resp.get("seq")
    if isinstance(seq, int) and "stream" in resp:
        return seq, ""
    return 0, "the answer is not a stream acknowledgement"
