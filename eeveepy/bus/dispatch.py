"""What the subscriptions of one ipc share while they hand messages to handlers.

:class:`Dispatch` is that shared part: the limits, the halt/resume :class:`Gate`, the durable
deliveries being kept alive, and what happens to a message that cannot be handled: a payload
that is not a valid envelope is counted, logged and dead-lettered on
``<prefix>.dlq.<subject>``; a handler that raises is logged and, for a request, answered with
an :class:`~eeveepy.protocol.models.ErrorReply`. :func:`resolve_decoder` reads what a handler
wants from its annotation.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NatsClient

from eeveepy.bus.delivery import Deliveries, Delivery
from eeveepy.bus.provenance import Provenance
from eeveepy.bus.request import Requester
from eeveepy.errors import EnvelopeError, OperatorError
from eeveepy.protocol.codec import AnyEnvelopeDecoder, EnvelopeDecoder, dead_letter
from eeveepy.protocol.models import Body, Envelope, ErrorReply

__all__ = [
    "EVENT_BRANCHES",
    "Decoder",
    "Dispatch",
    "Gate",
    "Handler",
    "SubscriptionStats",
    "received",
    "resolve_decoder",
]

Handler = Callable[[Any], Awaitable[Any] | Any]
Decoder = EnvelopeDecoder[Any] | AnyEnvelopeDecoder

EVENT_BRANCHES = ("chat.in.", "chat.event.", "chat.out.", "log.")
"""Subject branches that are never requests: a reply subject there belongs to a stored
publish's acknowledgement, and no subscriber may answer it."""


@dataclass
class SubscriptionStats:
    """Counters of one subscription. ``dropped`` counts messages lost to a full inbox,
    ``skipped`` those its ``wants`` test turned away (never received)."""

    received: int = 0
    handled: int = 0
    rejected: int = 0
    failed: int = 0
    dropped: int = 0
    skipped: int = 0


class Gate:
    """Open, or closed while delivery to gated handlers is paused (halt)."""

    __slots__ = ("_open", "closed")

    def __init__(self) -> None:
        self.closed = False
        self._open = asyncio.Event()
        self._open.set()

    def close(self) -> None:
        """Pause: gated handlers wait at :meth:`wait` until :meth:`open`."""
        self.closed = True
        self._open.clear()

    def open(self) -> None:
        """Let every waiting handler go on."""
        self.closed = False
        self._open.set()

    async def wait(self) -> None:
        """Return once the gate is open."""
        await self._open.wait()


class Dispatch:
    """The handling side of one ipc, shared by its subscriptions.

    ``ipc`` publishes answers and dead letters; ``max_inbound`` bounds a received payload,
    ``pending_msgs_limit`` each subscription's inbox; ``dlq`` False drops invalid payloads
    without a dead letter.
    """

    def __init__(
        self, ipc: Requester, *, max_inbound: int, pending_msgs_limit: int, dlq: bool
    ) -> None:
        self.ipc = ipc
        self.max_inbound = max_inbound
        self.pending_msgs_limit = pending_msgs_limit
        self.dlq_enabled = dlq
        self.gate = Gate()
        self.rejected = 0
        """Payloads rejected by every subscription together."""
        self.deliveries: Deliveries | None = None
        """The durable deliveries being handled (once a durable subscription exists)."""

    @property
    def no_reply(self) -> tuple[str, ...]:
        """Subject prefixes whose reply subjects are never answered (see EVENT_BRANCHES)."""
        prefix = self.ipc.subjects.prefix + "."
        return tuple(prefix + branch for branch in EVENT_BRANCHES)

    def track_deliveries(self, nc: NatsClient) -> Deliveries:
        """The :class:`Deliveries` of durable subscriptions on ``nc`` (made once)."""
        if self.deliveries is None:
            self.deliveries = Deliveries(nc, self.ipc.log)
        return self.deliveries

    async def close(self) -> None:
        """Stop keeping durable deliveries alive (the connection is going away)."""
        deliveries, self.deliveries = self.deliveries, None
        if deliveries is not None:
            await deliveries.close()

    async def answer(self, reply: str, result: Body) -> None:
        """Send a handler's ``result`` to the requester at ``reply``."""
        await self.ipc.send_to(reply, result)

    async def failed(
        self, handler: Handler, subject: str, reply: str, env: Envelope[Any], exc: Exception
    ) -> None:
        """A handler raised: log it and answer a request with an error."""
        self.ipc.log.error(
            "handler failed",
            subject=subject,
            envelope_id=env.id,
            handler=getattr(handler, "__qualname__", repr(handler)),
            error=repr(exc),
            exc_info=exc,
        )
        if reply:
            with contextlib.suppress(Exception):  # the requester may be gone
                await self.ipc.send_to(
                    reply, ErrorReply(error=type(exc).__name__, message=str(exc))
                )

    async def redeliver(
        self, stats: SubscriptionStats, subject: str, data: bytes, delivery: Delivery
    ) -> None:
        """A durable message whose handler failed: again later, or dead-lettered at last."""
        if not delivery.last:
            await delivery.nak(delay=min(0.5 * delivery.attempt, 5.0))
            return
        reason = f"handler failed on each of {delivery.attempt} deliveries"
        await self.reject(stats, subject, "", data, reason, delivery)

    async def reject(
        self,
        stats: SubscriptionStats,
        subject: str,
        reply: str,
        data: bytes,
        reason: str,
        delivery: Delivery | None = None,
    ) -> None:
        """Refuse a payload: count and log it, answer a request, and dead-letter it."""
        ipc = self.ipc
        if delivery is not None:
            await delivery.term()  # never again: the dead letter below keeps it
        stats.rejected += 1
        self.rejected += 1
        ipc.log.warning("envelope rejected", subject=subject, reason=reason, size=len(data))
        if reply:
            with contextlib.suppress(Exception):  # the requester may be gone; the DLQ records it
                await ipc.send_to(reply, ErrorReply(error="invalid", message=reason))
        if not self.dlq_enabled or subject.startswith(ipc.subjects.prefix + ".dlq."):
            return
        letter = dead_letter(subject, reason, ipc.source, data)
        try:
            await ipc.publish(ipc.subjects.dlq(subject), letter)
        except Exception as exc:  # never let the DLQ take the subscription down
            ipc.log.error("could not publish dead letter", subject=subject, error=repr(exc))


def received(
    data: bytes,
    subject: str,
    decode: Callable[[bytes, str], Any],
    limit: int,
    provenance: Provenance,
) -> tuple[Any, str | None]:
    """``(envelope, None)`` for a payload received on ``subject`` that a handler may have, else
    ``(envelope or None, why not)``: over ``limit`` bytes, not a valid envelope, or not from
    where its subject says (``provenance``: the caller's, see
    :class:`~eeveepy.bus.provenance.Provenance`)."""
    if len(data) > limit:
        return None, f"payload of {len(data)} bytes is over the limit of {limit}"
    try:
        env = decode(data, subject)
    except EnvelopeError as exc:
        return None, exc.reason
    return env, provenance.problem(subject, env.source, env.body)


def resolve_decoder(handler: Handler) -> tuple[Decoder, bool]:
    """From the handler's first parameter annotation: (decoder, handler wants the envelope)."""
    ann = _plain_annotation(handler)
    if ann is None:  # not a plain function or method: the general (and slower) way
        func = getattr(handler, "__func__", handler)
        try:
            hints = typing.get_type_hints(func)
        except Exception as exc:
            raise OperatorError(
                f"cannot read the type hints of handler {handler!r}: {exc}"
            ) from None
        params = list(inspect.signature(handler).parameters.values())
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


def _plain_annotation(handler: Handler) -> Any:
    """The first parameter's annotation of a plain function or bound method, evaluated as
    :func:`typing.get_type_hints` would; None for anything else, or when it is missing or
    does not evaluate (the general way then says why).

    Without :mod:`inspect` and :func:`typing.get_type_hints`: in an operator forked by the fork
    server, running their code for the first subscriptions copied ≈0.45 MB of the server's
    pages (a minimal operator's whole USS is ≈7.5 MB)."""
    bound = isinstance(handler, types.MethodType)
    func = handler.__func__ if isinstance(handler, types.MethodType) else handler
    if not isinstance(func, types.FunctionType) or hasattr(func, "__wrapped__"):
        return None
    code = func.__code__
    skip = 1 if bound else 0
    if code.co_argcount <= skip:
        return None
    ann = func.__annotations__.get(code.co_varnames[skip])
    if isinstance(ann, str):
        try:
            ann = eval(ann, func.__globals__)  # what get_type_hints does with it
        except Exception:
            return None
    return ann
