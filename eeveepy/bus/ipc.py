"""The bus API an operator author sees: ``publish``, ``subscribe``, ``request``, ``respond``.

Subjects given to these methods are relative to the bus prefix (``"chat.in.>"``) unless they
already start with it (``"eevee.chat.in.>"``), so code works with any configured prefix.

A handler names what it wants by its parameter's annotation:

- a body model (``msg: ChatMessage``): gets the validated body;
- ``Envelope[ChatMessage]``: gets the validated envelope with its metadata;
- ``Envelope[dict[str, Any]]`` (or bare ``Envelope``): any kind, body as a JSON object.

A payload that fails validation never reaches the handler: it is counted, logged with subject
and reason, and republished on ``<prefix>.dlq.<subject>`` as a :class:`DeadLetter`. A handler
that raises is logged with the envelope id; the subscription goes on. A handler that returns a
body on a request answers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import typing
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.errors import NoRespondersError as NatsNoResponders
from nats.errors import TimeoutError as NatsTimeout

from eeveepy.bus.client import EeveeClient
from eeveepy.bus.delivery import (
    Deliveries,
    Delivery,
    StreamFinder,
    open_consumer,
    publish_stored,
)
from eeveepy.errors import (
    BusError,
    EnvelopeError,
    NoRespondersError,
    OperatorError,
    PayloadTooLargeError,
    RemoteError,
    RequestTimeoutError,
)
from eeveepy.protocol.codec import AnyEnvelopeDecoder, EnvelopeDecoder, EnvelopeEncoder, dead_letter
from eeveepy.protocol.models import Body, Envelope, ErrorReply
from eeveepy.protocol.subjects import Subjects

B = TypeVar("B", bound=Body)
Handler = Callable[[Any], Awaitable[Any] | Any]
H = TypeVar("H", bound=Handler)

DEFAULT_MAX_INBOUND = 1024 * 1024
DEFAULT_PENDING_MSGS = 65536


@dataclass
class SubscriptionStats:
    """Counters of one subscription. ``dropped`` counts messages lost to a full inbox."""

    received: int = 0
    handled: int = 0
    rejected: int = 0
    failed: int = 0
    dropped: int = 0


# (reply subject, envelope being handled, its JetStream delivery when durable)
_Delivery = tuple[str, Envelope[Any], Delivery | None]

EVENT_BRANCHES = ("chat.in.", "chat.event.", "chat.out.", "log.")
"""Subject branches that are never requests: a reply subject there belongs to a stored
publish's acknowledgement, and no subscriber may answer it."""


class _Inbox:
    """Bounded FIFO between the connection's reader and one subscription's consumer task."""

    __slots__ = ("_waiter", "limit", "queue", "stats")

    def __init__(self, limit: int, stats: SubscriptionStats) -> None:
        self.queue: deque[tuple[bytes, bytes, bytes]] = deque()
        self.limit = limit
        self.stats = stats
        self._waiter: asyncio.Future[None] | None = None

    def push(self, subject: bytes, reply: bytes, data: bytes) -> None:
        if len(self.queue) >= self.limit:
            self.stats.dropped += 1
            return
        self.queue.append((subject, reply, data))
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter


@dataclass(eq=False)
class Subscription:
    """A subscription of an :class:`Ipc`; ``await``-able, and an async context manager."""

    ipc: Ipc
    pattern: str
    handler: Handler
    queue: str | None
    durable: str | None = None
    backstop: bool = False
    stats: SubscriptionStats = field(default_factory=SubscriptionStats)
    gated: bool = True
    _nats_sub: NatsSubscription | None = None
    _inbox: _Inbox | None = None
    _task: asyncio.Task[None] | None = None
    _busy: bool = False

    @property
    def active(self) -> bool:
        """True while it receives messages."""
        return self._nats_sub is not None

    @property
    def pending(self) -> int:
        """Messages received and not yet handled."""
        return (len(self._inbox.queue) if self._inbox else 0) + (1 if self._busy else 0)

    async def start(self) -> Subscription:
        """Subscribe on the bus (idempotent)."""
        if self._nats_sub is None:
            await self.ipc._activate(self)
        return self

    async def stop_receiving(self) -> None:
        """Unsubscribe on the bus; what was already received is still handled."""
        sub, self._nats_sub = self._nats_sub, None
        if sub is not None:
            nc = self.ipc._nc
            if isinstance(nc, EeveeClient):
                nc.fast_paths.pop(sub._id, None)
            with contextlib.suppress(Exception):  # a closed connection has nothing to undo
                await sub.unsubscribe()

    async def _stop_consumer(self) -> None:
        """End the consumer task; what it had not handled yet is dropped."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def unsubscribe(self) -> None:
        """Stop receiving; messages already buffered are dropped."""
        await self.stop_receiving()
        await self._stop_consumer()
        self._inbox = None
        self.ipc._forget(self)

    def __await__(self) -> typing.Generator[Any, None, Subscription]:
        return self.start().__await__()

    async def __aenter__(self) -> Subscription:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.unsubscribe()


class Ipc:
    """Typed publish/subscribe over one NATS connection, for one operator id."""

    def __init__(
        self,
        subjects: Subjects,
        source: str,
        *,
        logger: Any = None,
        max_inbound: int = DEFAULT_MAX_INBOUND,
        pending_msgs_limit: int = DEFAULT_PENDING_MSGS,
        dlq: bool = True,
    ) -> None:
        self.subjects = subjects
        self.source = source
        self.max_inbound = max_inbound
        self.pending_msgs_limit = pending_msgs_limit
        self.dlq_enabled = dlq
        self._log = logger if logger is not None else structlog.get_logger("eeveepy.ipc")
        self._encoder = EnvelopeEncoder(source)
        self._nc: NatsClient | None = None
        self._subs: list[Subscription] = []
        self._prefix_dot = subjects.prefix + "."
        self._halted = False
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._current: ContextVar[_Delivery | None] = ContextVar(
            f"eevee_delivery_{id(self)}", default=None
        )
        self._dlq_prefix = subjects.prefix + ".dlq."
        self.rejected = 0
        self._decoders: dict[type[Body], Any] = {}
        self._no_reply = tuple(self._prefix_dot + branch for branch in EVENT_BRANCHES)
        self._deliveries: Deliveries | None = None
        self._streams = StreamFinder()
        self._reply_seq: OrderedDict[str, int] = OrderedDict()
        self.reply_scope: ContextVar[str | None] = ContextVar(
            f"eevee_reply_scope_{id(self)}", default=None
        )
        """Scope of :meth:`reply_id` for what runs in this context (a command sets its own)."""

    # -- connection ------------------------------------------------------------------------

    @property
    def nc(self) -> NatsClient:
        """The underlying nats-py client (for what the ipc layer does not cover)."""
        if self._nc is None:
            raise OperatorError("the bus is not connected yet; wait for on_start")
        return self._nc

    @property
    def connected(self) -> bool:
        """True once attached to a connection."""
        return self._nc is not None

    async def attach(self, nc: NatsClient) -> None:
        """Use ``nc`` and activate every subscription declared so far."""
        self._nc = nc
        for sub in list(self._subs):
            await sub.start()

    async def detach(self) -> None:
        """Unsubscribe everything now (the connection itself is left to its owner)."""
        for sub in list(self._subs):
            await sub.stop_receiving()
            await sub._stop_consumer()
        deliveries, self._deliveries = self._deliveries, None
        if deliveries is not None:
            await deliveries.close()
        self._nc = None

    async def drain(self, timeout: float = 5.0) -> bool:
        """Stop receiving, let handlers finish what was received (bounded), then detach.

        Returns False when the timeout passed with messages still unhandled (they are dropped).
        """
        for sub in list(self._subs):
            await sub.stop_receiving()
        deadline = asyncio.get_running_loop().time() + timeout
        self.resume()
        while any(sub.pending for sub in self._subs):
            if asyncio.get_running_loop().time() >= deadline:
                await self.detach()
                return False
            await asyncio.sleep(0.01)
        await self.detach()
        return True

    def full(self, subject: str) -> str:
        """``subject`` with the bus prefix, unless it already has it."""
        if subject.startswith(self._prefix_dot):
            return subject
        return self._prefix_dot + subject

    # -- halt / resume ---------------------------------------------------------------------

    @property
    def halted(self) -> bool:
        """True while delivery to gated handlers is paused."""
        return self._halted

    def halt(self) -> None:
        """Pause delivery: messages wait in the client's buffer (bounded per subscription)."""
        self._halted = True
        self._resumed.clear()

    def resume(self) -> None:
        """Deliver again, starting with what was buffered."""
        self._halted = False
        self._resumed.set()

    # -- publish ---------------------------------------------------------------------------

    def encode(
        self,
        body: Body,
        headers: dict[str, str] | None = None,
        trace: str | None = None,
        msg_id: str | None = None,
    ) -> tuple[str, bytes]:
        """Envelope ``body`` as this operator would publish it; returns ``(id, payload)``."""
        if trace is None:
            current = self._current.get()
            if current is not None:
                trace = current[1].trace
        if trace is not None:
            headers = {**headers, "trace": trace} if headers else {"trace": trace}
        return self._encoder.encode(body, headers, msg_id=msg_id)

    def reply_id(self, trace: str, scope: str | None = None) -> str:
        """The id of the next message this process publishes in answer to ``trace``.

        ``<trace>~<scope>~<n>`` (scope: ``scope``, else :attr:`reply_scope` of the running
        context, else this operator's id; ``cmd.echo`` while a command runs, which all its
        replicas share): the same for the n-th answer of a
        handling done again (a router that died and handles a line again, a command run again
        after its operator died), so the chat output stream and the connectors keep one.
        """
        key = f"{trace}~{scope or self.reply_scope.get() or self.source}"
        n = self._reply_seq.pop(key, -1) + 1
        self._reply_seq[key] = n
        if len(self._reply_seq) > 4096:
            self._reply_seq.popitem(last=False)
        return f"{key}~{n}"

    async def publish(
        self,
        subject: str,
        body: Body,
        *,
        headers: dict[str, str] | None = None,
        trace: str | None = None,
    ) -> str:
        """Publish ``body`` in an envelope; returns the envelope id.

        Inside a handler the trace id of the message being handled is carried over unless
        ``trace`` is given. Raises :class:`PayloadTooLargeError` before sending anything when
        the envelope is over the server's max_payload.
        """
        nc = self.nc
        msg_id, payload = self.encode(body, headers, trace)
        subj = self.full(subject)
        if len(payload) > nc.max_payload:
            raise PayloadTooLargeError(subj, len(payload), nc.max_payload)
        await nc.publish(subj, payload)
        return msg_id

    async def publish_stored(
        self,
        subject: str,
        body: Body,
        *,
        headers: dict[str, str] | None = None,
        trace: str | None = None,
        msg_id: str | None = None,
        timeout: float = 2.0,
        deadline: float = 30.0,
    ) -> str:
        """Publish ``body`` and return once the stream that stores ``subject`` has it.

        For messages that must not be lost, such as a connector's ``chat.in``: re-sent while
        the bus is away (stored once), :class:`~eeveepy.errors.DeliveryError` after
        ``deadline`` seconds. Without a stream for the subject it is a plain publish.
        """
        msg_id, payload = self.encode(body, headers, trace, msg_id)
        await self.store_raw(subject, payload, msg_id, timeout=timeout, deadline=deadline)
        return msg_id

    async def store_raw(
        self,
        subject: str,
        payload: bytes,
        msg_id: str,
        *,
        timeout: float = 2.0,
        deadline: float = 30.0,
    ) -> None:
        """:meth:`publish_stored` of an encoded envelope whose id is ``msg_id``."""
        nc = self.nc
        subj = self.full(subject)
        if len(payload) > nc.max_payload:
            raise PayloadTooLargeError(subj, len(payload), nc.max_payload)
        stream = await self._streams.lookup(nc, subj)
        if stream is None:
            await nc.publish(subj, payload)
            return
        try:
            await publish_stored(
                nc, subj, payload, msg_id, stream, timeout=timeout, deadline=deadline
            )
        except BusError:
            self._streams.forget(subj)
            raise

    async def publish_raw(self, subject: str, payload: bytes, reply: str = "") -> None:
        """Publish bytes as they are (no envelope): for tools and tests."""
        nc = self.nc
        subj = self.full(subject)
        if len(payload) > nc.max_payload:
            raise PayloadTooLargeError(subj, len(payload), nc.max_payload)
        await nc.publish(subj, payload, reply=reply)

    # -- request / reply -------------------------------------------------------------------

    async def request(
        self,
        subject: str,
        body: Body,
        reply_model: type[B],
        *,
        timeout: float = 2.0,
        headers: dict[str, str] | None = None,
    ) -> Envelope[B]:
        """Send a request and wait (bounded) for one reply of ``reply_model``.

        Raises :class:`RequestTimeoutError`, :class:`NoRespondersError`, :class:`RemoteError`
        (the responder answered with an error) or :class:`EnvelopeError` (a malformed reply).
        """
        nc = self.nc
        _, payload = self.encode(body, headers)
        subj = self.full(subject)
        if len(payload) > nc.max_payload:
            raise PayloadTooLargeError(subj, len(payload), nc.max_payload)
        try:
            msg = await nc.request(subj, payload, timeout=timeout)
        except NatsNoResponders:
            raise NoRespondersError(f"nobody answers on {subj}") from None
        except NatsTimeout:
            raise RequestTimeoutError(f"no reply on {subj} within {timeout:g} s") from None
        try:
            return self._decoder(reply_model).decode(msg.data, subj)
        except EnvelopeError:
            try:
                err = self._decoder(ErrorReply).decode(msg.data, subj)
            except EnvelopeError:
                raise
            raise RemoteError(f"{err.source}: {err.body.message}", err.body.error) from None

    def _decoder(self, model: type[B]) -> EnvelopeDecoder[B]:
        decoder = self._decoders.get(model)
        if decoder is None:
            decoder = self._decoders[model] = EnvelopeDecoder(model)
        return decoder

    async def respond(self, body: Body) -> bool:
        """Answer the request being handled; False when it was not a request."""
        current = self._current.get()
        if current is None or not current[0]:
            return False
        _, payload = self.encode(body)
        await self.nc.publish(current[0], payload)
        return True

    def current(self) -> Envelope[Any] | None:
        """The envelope being handled in this task, if any."""
        delivery = self._current.get()
        return delivery[1] if delivery else None

    def hold(self) -> Delivery | None:
        """Take over the acknowledgement of the durable message being handled.

        The ipc layer then does not acknowledge it when the handler returns: call ``ack()``
        (or ``nak()``/``term()``) on the result once the work is really done, right after
        publishing its reply. Until then it is kept alive; if this process dies first, it is
        delivered again. None when the message being handled is not a durable delivery.
        """
        current = self._current.get()
        delivery = current[2] if current else None
        if delivery is not None:
            delivery.held = True
        return delivery

    # -- subscribe -------------------------------------------------------------------------

    @typing.overload
    def subscribe(
        self,
        pattern: str,
        handler: None = None,
        *,
        queue: str | None = None,
        durable: str | None = None,
        backstop: bool = False,
    ) -> Callable[[H], H]: ...

    @typing.overload
    def subscribe(
        self,
        pattern: str,
        handler: Handler,
        *,
        queue: str | None = None,
        durable: str | None = None,
        backstop: bool = False,
    ) -> Subscription: ...

    def subscribe(
        self,
        pattern: str,
        handler: Handler | None = None,
        *,
        queue: str | None = None,
        durable: str | None = None,
        backstop: bool = False,
    ) -> Callable[[H], H] | Subscription:
        """Subscribe ``handler`` to ``pattern`` (NATS wildcards), optionally in a queue group.

        ``durable="name"`` reads the stream that stores ``pattern`` through the durable
        consumer ``name`` (shared by every subscriber of that name, like a queue group):
        each message is acknowledged once its handler returned (see :meth:`hold`), and
        delivered again if this process dies first. Without such a stream it is a plain
        subscription in the queue group ``queue or name``, and a warning says so; with
        ``backstop=True`` (it backs up a plain subscription of the same pattern, which has the
        messages anyway) it is not made at all.

        As a decorator (no handler) it declares a subscription that starts when the operator
        connects. With a handler it returns a :class:`Subscription` to ``await`` (or use as an
        async context manager) once connected.
        """
        if handler is None:

            def decorator(fn: H) -> H:
                if self.connected:
                    raise OperatorError(
                        "the bus is already connected: use "
                        "`await ipc.subscribe(pattern, handler)` instead of the decorator"
                    )
                self._add(pattern, fn, queue, durable, backstop)
                return fn

            return decorator
        return self._add(pattern, handler, queue, durable, backstop)

    def _add(
        self,
        pattern: str,
        handler: Handler,
        queue: str | None,
        durable: str | None = None,
        backstop: bool = False,
    ) -> Subscription:
        full = self.full(pattern)
        self.subjects.pattern(full[len(self._prefix_dot) :])  # validates the pattern
        sub = Subscription(self, full, handler, queue, durable, backstop)
        _resolve_decoder(handler)  # fail now, not on the first message
        self._subs.append(sub)
        return sub

    def _forget(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    async def _activate(self, sub: Subscription) -> None:
        nc = self.nc
        inbox = _Inbox(self.pending_msgs_limit, sub.stats)

        async def fallback(msg: Msg) -> None:
            # Plain nats-py delivery, used until the fast path is registered (or without it).
            inbox.push(msg.subject.encode(), msg.reply.encode(), msg.data)

        subject, queue = sub.pattern, sub.queue or ""
        if sub.durable:
            deliver = await open_consumer(nc, self.subjects.prefix, sub.pattern, sub.durable)
            if deliver is None:
                self._log.warning(
                    "no stream stores these messages: delivery is at most once",
                    pattern=sub.pattern,
                )
                if sub.backstop:
                    return
                queue = queue or sub.durable
            else:
                subject, queue = deliver, sub.durable
                if self._deliveries is None:
                    self._deliveries = Deliveries(nc, self._log)
        sub._inbox = inbox
        sub._task = asyncio.get_running_loop().create_task(
            self._consume(sub, inbox), name=f"ipc:{sub.pattern}"
        )
        nats_sub = await nc.subscribe(
            subject,
            queue=queue,
            cb=fallback,
            pending_msgs_limit=self.pending_msgs_limit,
        )
        if isinstance(nc, EeveeClient):
            nc.fast_paths[nats_sub._id] = inbox.push
        sub._nats_sub = nats_sub

    async def _consume(self, sub: Subscription, inbox: _Inbox) -> None:
        """The subscription's task: validate each received payload and call the handler.

        This is the per-message hot path, so it is one flat loop with its lookups hoisted.
        """
        decoder, want_envelope = _resolve_decoder(sub.handler)
        handler = sub.handler
        is_async = inspect.iscoroutinefunction(handler)
        stats = sub.stats
        max_inbound = self.max_inbound
        current = self._current
        queue = inbox.queue
        decode = decoder.decode
        no_reply = self._no_reply
        durable = self._deliveries if sub.durable else None
        while True:
            if not queue:
                await inbox.wait()
                continue
            raw_subject, raw_reply, data = queue.popleft()
            sub._busy = True
            stats.received += 1
            subject = raw_subject.decode()
            reply = raw_reply.decode() if raw_reply else ""
            delivery: Delivery | None = None
            if reply and (durable is not None or subject.startswith(no_reply)):
                if durable is not None and reply.startswith("$JS.ACK."):
                    delivery = durable.begin(reply)
                    if delivery is None:  # a redelivery of what is being handled
                        sub._busy = False
                        continue
                reply = ""
            try:
                if len(data) > max_inbound:
                    reason = f"payload of {len(data)} bytes is over the limit of {max_inbound}"
                    await self._reject(stats, subject, reply, data, reason, delivery)
                    continue
                try:
                    env = decode(data, subject)
                except EnvelopeError as exc:
                    await self._reject(stats, subject, reply, data, exc.reason, delivery)
                    continue
                if delivery is not None and delivery.last:  # it took every receiver down
                    reason = f"delivered {delivery.attempt} times and never acknowledged"
                    await self._reject(stats, subject, "", data, reason, delivery)
                    continue
                if self._halted and sub.gated:
                    await self._resumed.wait()
                token = current.set((reply, env, delivery))
                try:
                    result = handler(env if want_envelope else env.body)
                    if is_async:
                        result = await result
                    stats.handled += 1
                    if reply and isinstance(result, Body):
                        await self.respond(result)
                    if delivery is not None and not delivery.held:
                        await delivery.ack()
                except Exception as exc:
                    stats.failed += 1
                    await self._handler_failed(handler, subject, reply, env, exc)
                    if delivery is not None and not delivery.done:
                        await self._redeliver(stats, subject, data, delivery)
                finally:
                    current.reset(token)
            except Exception as exc:  # a bug of ours must not end the subscription
                self._log.exception("delivery failed", subject=subject, error=repr(exc))
            finally:
                sub._busy = False

    async def _handler_failed(
        self, handler: Handler, subject: str, reply: str, env: Envelope[Any], exc: Exception
    ) -> None:
        self._log.error(
            "handler failed",
            subject=subject,
            envelope_id=env.id,
            handler=getattr(handler, "__qualname__", repr(handler)),
            error=repr(exc),
            exc_info=exc,
        )
        if reply:
            with contextlib.suppress(Exception):
                await self.respond(ErrorReply(error=type(exc).__name__, message=str(exc)))

    async def _redeliver(
        self, stats: SubscriptionStats, subject: str, data: bytes, delivery: Delivery
    ) -> None:
        """A durable message whose handler failed: again later, or dead-lettered at last."""
        if not delivery.last:
            await delivery.nak(delay=min(0.5 * delivery.attempt, 5.0))
            return
        reason = f"handler failed on each of {delivery.attempt} deliveries"
        await self._reject(stats, subject, "", data, reason, delivery)

    async def _reject(
        self,
        stats: SubscriptionStats,
        subject: str,
        reply: str,
        data: bytes,
        reason: str,
        delivery: Delivery | None = None,
    ) -> None:
        if delivery is not None:
            await delivery.term()  # never again: the dead letter below keeps it
        stats.rejected += 1
        self.rejected += 1
        self._log.warning("envelope rejected", subject=subject, reason=reason, size=len(data))
        if reply:
            with contextlib.suppress(Exception):  # the requester may be gone; the DLQ records it
                _, payload = self._encoder.encode(ErrorReply(error="invalid", message=reason))
                await self.nc.publish(reply, payload)
        if not self.dlq_enabled or subject.startswith(self._dlq_prefix):
            return
        letter = dead_letter(subject, reason, self.source, data)
        try:
            await self.publish(self.subjects.dlq(subject), letter)
        except Exception as exc:  # never let the DLQ take the subscription down
            self._log.error("could not publish dead letter", subject=subject, error=repr(exc))


_Decoder = EnvelopeDecoder[Any] | AnyEnvelopeDecoder


def _resolve_decoder(handler: Handler) -> tuple[_Decoder, bool]:
    """From the handler's first parameter annotation: (decoder, handler wants the envelope)."""
    target = handler
    func = getattr(handler, "__func__", handler)
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:
        raise OperatorError(f"cannot read the type hints of handler {handler!r}: {exc}") from None
    params = [p for p in inspect.signature(target).parameters.values()]
    if not params:
        raise OperatorError(f"handler {handler!r} must take one parameter (the message)")
    ann = hints.get(params[0].name)
    if ann is None:
        raise OperatorError(
            f"annotate the parameter of {handler!r} with a body model (e.g. ChatMessage) "
            "or Envelope[...] so the bus knows what to validate"
        )
    if isinstance(ann, type) and issubclass(ann, Body):
        return EnvelopeDecoder(ann), False
    if ann is Envelope:
        return AnyEnvelopeDecoder(), True
    meta = getattr(ann, "__pydantic_generic_metadata__", None)
    if meta and meta.get("origin") is Envelope and meta.get("args"):
        arg = meta["args"][0]
        if isinstance(arg, type) and issubclass(arg, Body):
            return EnvelopeDecoder(arg), True
        return AnyEnvelopeDecoder(), True
    raise OperatorError(
        f"cannot subscribe {handler!r}: its parameter is annotated {ann!r}; "
        "use a body model or Envelope[...]"
    )


__all__ = ["BusError", "Ipc", "Subscription", "SubscriptionStats"]
