"""One subscription of the ipc layer: its NATS subscription, its inbox and its consumer task.

The connection's reader pushes each received message into the subscription's bounded
:class:`Inbox` (raw bytes, on nats-py's fast path); the subscription's own task validates it
and calls the handler, one message at a time, in order. What the subscriptions of one ipc
share (limits, halt/resume, answers, dead letters) is their :class:`~eeveepy.bus.dispatch.Dispatch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import typing
from collections import deque
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from pydantic import ValidationError

from eeveepy.bus.backstop import Backstop
from eeveepy.bus.concurrent import Concurrent
from eeveepy.bus.delivery import Delivery, Once, open_consumer
from eeveepy.bus.dispatch import Dispatch, Handler, SubscriptionStats, received, resolve_decoder
from eeveepy.bus.natsadapter import add_fast_path, add_header_path, remove_fast_path
from eeveepy.bus.provenance import Provenance
from eeveepy.protocol.models import Body

__all__ = ["Inbox", "Subscription", "Wants"]

Wants = Callable[[bytes], bool]
"""A cheap test of a raw payload: False skips it before it is validated."""


class Inbox:
    """Bounded FIFO between the connection's reader and one subscription's consumer task."""

    __slots__ = ("_waiter", "limit", "queue", "stats", "wants")

    def __init__(self, limit: int, stats: SubscriptionStats, wants: Wants | None = None) -> None:
        self.queue: deque[tuple[bytes, bytes, bytes]] = deque()
        self.limit = limit
        self.stats = stats
        self.wants = wants
        self._waiter: asyncio.Future[None] | None = None

    def push(self, subject: bytes, reply: bytes, data: bytes) -> None:
        """Take one message (dropped and counted when the inbox is full, skipped and counted
        when ``wants`` says False)."""
        if self.wants is not None and not _wanted(self.wants, data):
            self.stats.skipped += 1
            return
        if len(self.queue) >= self.limit:
            self.stats.dropped += 1
            return
        self.queue.append((subject, reply, data))
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Return once a message was pushed (``loop``: the running one, if the caller has it:
        looking it up is a getpid() system call on Python 3.11)."""
        self._waiter = (loop or asyncio.get_running_loop()).create_future()
        await self._waiter


def _wanted(wants: Wants, data: bytes) -> bool:
    """``wants(data)``; True when it raises (the payload is then validated as any other)."""
    try:
        return bool(wants(data))
    except Exception:
        return True


class Subscription:
    """A subscription of an :class:`~eeveepy.bus.ipc.Ipc`; ``await``-able, and an async
    context manager.

    ``pattern`` is the full subject pattern; ``gated`` False keeps it delivering while the
    ipc is halted (pings, control requests). ``discard`` is called with it when it is
    unsubscribed, so its ipc forgets it. ``concurrency`` above 1 runs that many handlers at
    once (:class:`~eeveepy.bus.concurrent.Concurrent`; plain subscriptions only). A durable
    one with ``backstop`` keeps its copies in a :class:`~eeveepy.bus.backstop.Backstop`.
    """

    def __init__(
        self,
        dispatch: Dispatch,
        discard: Callable[[Subscription], None],
        pattern: str,
        handler: Handler,
        queue: str | None,
        durable: str | None = None,
        backstop: bool | Once = False,
        concurrency: int = 1,
    ) -> None:
        self.pattern = pattern
        self.concurrency = concurrency
        self.handler = handler
        self.queue = queue
        self.durable = durable
        self.backstop = backstop
        self.stats = SubscriptionStats()
        self.gated = True
        self.wants: Wants | None = None
        """A test of the raw payload (see ``Ipc.subscribe``); set before :meth:`start`."""
        self._dispatch = dispatch
        self._discard = discard
        self._nc: NatsClient | None = None
        self._nats_sub: NatsSubscription | None = None
        self._inbox: Inbox | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self._idle: asyncio.Future[None] | None = None
        self._runner: Concurrent | None = None
        self._backstop: Backstop | None = None

    @property
    def active(self) -> bool:
        """True while it receives messages."""
        return self._nats_sub is not None

    @property
    def pending(self) -> int:
        """Messages received and not yet handled."""
        running = len(self._runner.tasks) if self._runner else 0
        return (len(self._inbox.queue) if self._inbox else 0) + (1 if self._busy else 0) + running

    async def start(self) -> Subscription:
        """Subscribe on the bus (idempotent)."""
        if self._nats_sub is not None:
            return self
        dispatch = self._dispatch
        nc = dispatch.ipc.nc
        inbox = Inbox(dispatch.pending_msgs_limit, self.stats, self.wants)

        async def fallback(msg: Msg) -> None:
            # Plain nats-py delivery, used until the fast path is registered (or without it).
            inbox.push(msg.subject.encode(), msg.reply.encode(), msg.data)

        subject, queue = self.pattern, self.queue or ""
        if self.durable:
            prefix = dispatch.ipc.subjects.prefix
            deliver = await open_consumer(nc, prefix, self.pattern, self.durable)
            if deliver is None:
                dispatch.ipc.log.warning(
                    "no stream stores these messages: delivery is at most once",
                    pattern=self.pattern,
                )
                if self.backstop:
                    return self
                queue = queue or self.durable
            elif self.backstop is not False:
                return await self._start_backstop(nc, deliver)
            else:
                subject, queue = deliver, self.durable
                dispatch.track_deliveries(nc)
        self._inbox = inbox
        self._task = asyncio.get_running_loop().create_task(
            self._consume(inbox), name=f"ipc:{self.pattern}"
        )
        self._nc = nc
        self._nats_sub = await nc.subscribe(
            subject, queue=queue, cb=fallback, pending_msgs_limit=dispatch.pending_msgs_limit
        )
        add_fast_path(nc, self._nats_sub, inbox.push)
        return self

    async def _start_backstop(self, nc: NatsClient, deliver: str) -> Subscription:
        """Receive the consumer's copies into a :class:`Backstop` (see its module)."""
        dispatch = self._dispatch
        once = self.backstop if isinstance(self.backstop, Once) else None
        backstop = Backstop(dispatch, nc, self.handler, once, self.stats, self.gated)

        async def fallback(msg: Msg) -> None:  # until the fast path is registered
            msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
            backstop.push(msg.subject, msg.reply, msg.data, msg_id)

        self._backstop = backstop
        self._task = asyncio.get_running_loop().create_task(
            backstop.run(), name=f"ipc:backstop:{self.pattern}"
        )
        self._nc = nc
        self._nats_sub = await nc.subscribe(
            deliver,
            queue=self.durable or "",
            cb=fallback,
            pending_msgs_limit=dispatch.pending_msgs_limit,
        )
        add_header_path(nc, self._nats_sub, backstop.push_raw)
        return self

    async def stop_receiving(self) -> None:
        """Unsubscribe on the bus; what was already received is still handled."""
        sub, self._nats_sub = self._nats_sub, None
        if sub is not None and self._nc is not None:
            remove_fast_path(self._nc, sub)
            with contextlib.suppress(Exception):  # a closed connection has nothing to undo
                await sub.unsubscribe()

    def _done(self) -> None:
        """A concurrent handler finished: wake :meth:`idle` once nothing is pending."""
        idle = self._idle
        if idle is not None and not idle.done() and not self.pending:
            idle.set_result(None)

    async def idle(self) -> None:
        """Return once everything received so far has been handled (unbounded: time it)."""
        while self.pending:
            if self._idle is None or self._idle.done():
                self._idle = asyncio.get_running_loop().create_future()
            await self._idle

    async def stop(self) -> None:
        """Stop receiving and end the consumer task; what it had not handled is dropped.

        It stays declared: its ipc starts it again when attached to a connection.
        """
        await self.stop_receiving()
        task, self._task = self._task, None
        self._inbox = None
        backstop, self._backstop = self._backstop, None
        if backstop is not None:
            await backstop.close()
        self._busy = False
        if self._idle is not None and not self._idle.done():
            self._idle.set_result(None)  # nothing is pending any more
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        runner, self._runner = self._runner, None
        if runner is not None and runner.tasks:
            await asyncio.gather(*runner.cancel(), return_exceptions=True)

    async def unsubscribe(self) -> None:
        """Stop receiving; messages already buffered are dropped; its ipc forgets it."""
        await self.stop()
        self._discard(self)

    def __await__(self) -> typing.Generator[Any, None, Subscription]:
        return self.start().__await__()

    async def __aenter__(self) -> Subscription:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.unsubscribe()

    async def _consume(self, inbox: Inbox) -> None:
        """The consumer task: validate each received payload and call the handler.

        This is the per-message hot path, so it is one flat loop with its lookups hoisted.
        """
        dispatch = self._dispatch
        decoder, want_envelope = resolve_decoder(self.handler)
        handler = self.handler
        is_async = inspect.iscoroutinefunction(handler)
        stats = self.stats
        if self.concurrency > 1 and not self.durable:
            self._runner = Concurrent(
                handler, is_async, self.concurrency, dispatch, stats, self.pattern, self._done
            )
            handler, is_async = self._runner, True
        max_inbound = dispatch.max_inbound
        current = dispatch.ipc.handling
        gate = dispatch.gate
        queue = inbox.queue
        decode = decoder.decode
        validate, kind = decoder.validate_json, decoder.kind
        no_reply = dispatch.no_reply
        durable = dispatch.deliveries if self.durable else None
        provenance = Provenance(dispatch.ipc.subjects.prefix + ".")
        loop = asyncio.get_running_loop()
        while True:
            if not queue:
                idle = self._idle
                if idle is not None and not idle.done() and not self._runner:
                    idle.set_result(None)
                await inbox.wait(loop)
                continue
            raw_subject, raw_reply, data = queue.popleft()
            self._busy = True
            stats.received += 1
            subject = raw_subject.decode()
            reply = raw_reply.decode() if raw_reply else ""
            delivery: Delivery | None = None
            if reply and (durable is not None or subject.startswith(no_reply)):
                if durable is not None and reply.startswith("$JS.ACK."):
                    delivery = durable.begin(reply)
                    if delivery is None:  # a redelivery of what is handled or was done
                        await durable.repeat(reply)
                        self._busy = False
                        continue
                reply = ""
            try:
                # received() inlined for a valid envelope (two calls fewer per message); for
                # anything else, received() itself says why.
                try:
                    env = validate(data) if len(data) <= max_inbound else None
                except ValidationError:
                    env = None
                if env is not None and (kind is None or env.kind == kind):
                    problem = provenance.problem(subject, env.source, env.body)
                else:
                    env, problem = received(data, subject, decode, max_inbound, provenance)
                if problem is not None:
                    await dispatch.reject(stats, subject, reply, data, problem, delivery)
                    continue
                if delivery is not None and delivery.last:  # it took every receiver down
                    reason = f"delivered {delivery.attempt} times and never acknowledged"
                    await dispatch.reject(stats, subject, "", data, reason, delivery)
                    continue
                if gate.closed and self.gated:
                    await gate.wait()
                token = current.set((reply, env, delivery))
                try:
                    result = handler(env if want_envelope else env.body)
                    if is_async:
                        result = await result
                    stats.handled += 1
                    if reply and isinstance(result, Body):
                        await dispatch.answer(reply, result)
                    if delivery is not None and not delivery.held:
                        await delivery.ack()
                except Exception as exc:
                    stats.failed += 1
                    await dispatch.failed(handler, subject, reply, env, exc)
                    if delivery is not None and not delivery.done:
                        await dispatch.redeliver(stats, subject, data, delivery)
                finally:
                    current.reset(token)
            except Exception as exc:  # a bug of ours must not end the subscription
                dispatch.ipc.log.exception("delivery failed", subject=subject, error=repr(exc))
            finally:
                self._busy = False
