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

:class:`Ipc` is assembled from the publishing side (:mod:`eeveepy.bus.publish`), request/reply
(:mod:`eeveepy.bus.request`) and the subscriptions (:mod:`eeveepy.bus.subscription`, with what
they share in :mod:`eeveepy.bus.dispatch`); nats-py's internals stay in
:mod:`eeveepy.bus.natsadapter`.
"""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from nats.aio.client import Client as NatsClient

from eeveepy.bus.delivery import Once
from eeveepy.bus.dispatch import Dispatch, Handler, SubscriptionStats, resolve_decoder
from eeveepy.bus.request import Requester
from eeveepy.bus.subscription import Subscription, Wants
from eeveepy.errors import BusError, OperatorError
from eeveepy.protocol.subjects import Subjects

__all__ = ["BusError", "Ipc", "Subscription", "SubscriptionStats", "Wants"]

H = TypeVar("H", bound=Handler)

DEFAULT_MAX_INBOUND = 1024 * 1024
DEFAULT_PENDING_MSGS = 65536


class Ipc(Requester):
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
        super().__init__(subjects, source, logger=logger)
        self._dispatch = Dispatch(
            self, max_inbound=max_inbound, pending_msgs_limit=pending_msgs_limit, dlq=dlq
        )
        self._subs: list[Subscription] = []

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        """The subscriptions declared or made so far, and not unsubscribed."""
        return tuple(self._subs)

    @property
    def rejected(self) -> int:
        """Payloads rejected (invalid, too large) by every subscription together."""
        return self._dispatch.rejected

    def rebind(self, subjects: Subjects, source: str, *, logger: Any = None) -> None:
        """Take another prefix and operator id before connecting (the runtime learns them at
        start); the subscriptions declared so far follow: a pattern given relative to the old
        prefix is now relative to the new one."""
        if self.connected:
            raise OperatorError("cannot change the prefix or id of a connected ipc")
        old = self.subjects
        self._bind(subjects, source, logger)
        for sub in self._subs:
            sub.pattern = self.full(old.relative(sub.pattern))

    # -- connection ------------------------------------------------------------------------

    async def attach(self, nc: NatsClient) -> None:
        """Use ``nc`` and activate every subscription declared so far."""
        self._nc = nc
        for sub in list(self._subs):
            await sub.start()

    async def detach(self) -> None:
        """Unsubscribe everything now (the connection itself is left to its owner)."""
        for sub in list(self._subs):
            await sub.stop()
        await self._dispatch.close()
        self._nc = None

    async def drain(self, timeout: float = 5.0) -> bool:
        """Stop receiving, let handlers finish what was received (bounded), then detach.

        Returns False when the timeout passed with messages still unhandled (they are dropped).
        """
        subs = list(self._subs)
        for sub in subs:
            await sub.stop_receiving()
        self.resume()
        try:
            async with asyncio.timeout(timeout):
                for sub in subs:
                    await sub.idle()
        except TimeoutError:
            await self.detach()
            return False
        await self.detach()
        return True

    # -- halt / resume ---------------------------------------------------------------------

    @property
    def halted(self) -> bool:
        """True while delivery to gated handlers is paused."""
        return self._dispatch.gate.closed

    def halt(self) -> None:
        """Pause delivery: messages wait in the client's buffer (bounded per subscription)."""
        self._dispatch.gate.close()

    def resume(self) -> None:
        """Deliver again, starting with what was buffered."""
        self._dispatch.gate.open()

    # -- subscribe -------------------------------------------------------------------------

    @typing.overload
    def subscribe(
        self,
        pattern: str,
        handler: None = None,
        *,
        queue: str | None = None,
        durable: str | None = None,
        backstop: bool | Once = False,
        concurrency: int = 1,
        wants: Wants | None = None,
    ) -> Callable[[H], H]: ...

    @typing.overload
    def subscribe(
        self,
        pattern: str,
        handler: Handler,
        *,
        queue: str | None = None,
        durable: str | None = None,
        backstop: bool | Once = False,
        concurrency: int = 1,
        wants: Wants | None = None,
    ) -> Subscription: ...

    def subscribe(
        self,
        pattern: str,
        handler: Handler | None = None,
        *,
        queue: str | None = None,
        durable: str | None = None,
        backstop: bool | Once = False,
        concurrency: int = 1,
        wants: Wants | None = None,
    ) -> Callable[[H], H] | Subscription:
        """Subscribe ``handler`` to ``pattern`` (NATS wildcards), optionally in a queue group.

        ``durable="name"`` reads the stream that stores ``pattern`` through the durable
        consumer ``name`` (shared by every subscriber of that name, like a queue group):
        each message is acknowledged once its handler returned (see :meth:`hold`), and
        delivered again if this process dies first. Without such a stream it is a plain
        subscription in the queue group ``queue or name``, and a warning says so.

        ``backstop=once`` (with ``durable``) backs up a plain subscription of the same pattern
        whose handler takes each message's id in the :class:`~eeveepy.bus.delivery.Once`
        ``once``: the stream's copies are then acknowledged in batches, without being decoded,
        once the fast path has handled them, and ``handler`` gets only those the fast path
        never saw (published while this process was down, or lost); see
        :mod:`eeveepy.bus.backstop`. ``backstop=True``: the same without a ``Once`` (every copy
        goes to ``handler`` after the grace; it drops repeats itself). Without a stream a
        backstop is not made at all.

        Handlers get one message at a time, in order; ``concurrency=N`` (plain subscriptions)
        lets up to N run at once, started in arrival order (see :mod:`eeveepy.bus.concurrent`).

        ``wants`` (plain subscriptions) is a cheap test of the raw payload, run as it arrives:
        a payload it says False to is skipped (counted in ``stats.skipped``) before anything
        else is done with it, so a handler that needs few of the messages of a busy pattern
        does not pay for validating the rest. What it lets through is validated as usual; a
        test that raises lets the payload through.

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
                self._add(pattern, fn, queue, durable, backstop, concurrency, wants)
                return fn

            return decorator
        return self._add(pattern, handler, queue, durable, backstop, concurrency, wants)

    def _add(
        self,
        pattern: str,
        handler: Handler,
        queue: str | None,
        durable: str | None = None,
        backstop: bool | Once = False,
        concurrency: int = 1,
        wants: Wants | None = None,
    ) -> Subscription:
        if concurrency < 1 or (concurrency > 1 and durable):
            raise OperatorError(
                f"concurrency={concurrency}: give 1 or more, and 1 for a durable subscription"
            )
        if wants is not None and durable:
            raise OperatorError(
                "wants= skips messages unacknowledged: give it to plain subscriptions only"
            )
        full = self.full(pattern)
        self.subjects.pattern(full[len(self.subjects.prefix) + 1 :])  # validates the pattern
        resolve_decoder(handler)  # fail now, not on the first message
        sub = Subscription(
            self._dispatch, self._discard, full, handler, queue, durable, backstop, concurrency
        )
        sub.wants = wants
        self._subs.append(sub)
        return sub

    def _discard(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
