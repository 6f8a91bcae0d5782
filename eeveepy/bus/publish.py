"""The publishing half of the ipc layer: envelopes out, plain or stored.

:class:`Publisher` holds the connection and this operator's identity (the subject prefix and
the ``source`` of every envelope). A send that fails goes through
:func:`~eeveepy.bus.natsadapter.bus_error`, so a closed connection or a full outgoing buffer
is a :class:`~eeveepy.errors.BusError`, never a nats-py exception.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from functools import partial
from typing import Any

import nats.errors
import structlog
from nats.aio.client import Client as NatsClient

from eeveepy.bus.delivery import (
    Delivery,
    StreamFinder,
    publish_stored,
    receipt_problem,
    stored_headers,
)
from eeveepy.bus.natsadapter import bus_error
from eeveepy.bus.replies import replies_of
from eeveepy.errors import BusError, OperatorError, PayloadTooLargeError
from eeveepy.protocol.codec import EnvelopeEncoder
from eeveepy.protocol.models import Body, Envelope
from eeveepy.protocol.subjects import Subjects

__all__ = ["Current", "Publisher"]

Current = tuple[str, Envelope[Any], Delivery | None]
"""The message being handled in a context: its reply subject ("" when it is not a request),
its envelope, and its durable delivery (None when it is not one)."""

_REPLY_SEQ_LIMIT = 4096


class Publisher:
    """Publishing over one NATS connection, as one operator id under one subject prefix."""

    def __init__(self, subjects: Subjects, source: str, *, logger: Any = None) -> None:
        self._nc: NatsClient | None = None
        self.handling: ContextVar[Current | None] = ContextVar(
            f"eevee_delivery_{id(self)}", default=None
        )
        """The message being handled in this context (set by the subscriptions)."""
        self._reply_seq: OrderedDict[str, int] = OrderedDict()
        self._streams = StreamFinder()
        self.reply_scope: ContextVar[str | None] = ContextVar(
            f"eevee_reply_scope_{id(self)}", default=None
        )
        """Scope of :meth:`reply_id` for what runs in this context (a command sets its own)."""
        self._bind(subjects, source, logger)

    def _bind(self, subjects: Subjects, source: str, logger: Any) -> None:
        """Take ``subjects``' prefix and ``source`` as this publisher's identity."""
        self.subjects = subjects
        self.source = source
        self._log = logger if logger is not None else structlog.get_logger("eeveepy.ipc")
        self._encoder = EnvelopeEncoder(source)
        self._prefix_dot = subjects.prefix + "."

    @property
    def log(self) -> Any:
        """The logger of the ipc layer (bound with the operator id)."""
        return self._log

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

    def full(self, subject: str) -> str:
        """``subject`` with the bus prefix, unless it already has it."""
        if subject.startswith(self._prefix_dot):
            return subject
        return self._prefix_dot + subject

    # -- envelopes -------------------------------------------------------------------------

    def encode(
        self,
        body: Body,
        headers: dict[str, str] | None = None,
        trace: str | None = None,
        msg_id: str | None = None,
    ) -> tuple[str, bytes]:
        """Envelope ``body`` as this operator would publish it; returns ``(id, payload)``."""
        if trace is None:
            current = self.handling.get()
            if current is not None:
                trace = current[1].trace
        if trace is not None:
            headers = {**headers, "trace": trace} if headers else {"trace": trace}
        return self._encoder.encode(body, headers, msg_id=msg_id)

    def reply_id(self, trace: str, scope: str | None = None) -> str:
        """The id of the next message this process publishes in answer to ``trace``.

        ``<trace>~<scope>~<n>`` (scope: ``scope``, else :attr:`reply_scope` of the running
        context, else this operator's id; ``cmd.echo`` while a command runs, which all its
        replicas share): the same for the n-th answer of a handling done again (a router that
        died and handles a line again, a command run again after its operator died), so the
        chat output stream and the connectors keep one.
        """
        key = f"{trace}~{scope or self.reply_scope.get() or self.source}"
        n = self._reply_seq.pop(key, -1) + 1
        self._reply_seq[key] = n
        if len(self._reply_seq) > _REPLY_SEQ_LIMIT:
            self._reply_seq.popitem(last=False)
        return f"{key}~{n}"

    # -- sending ---------------------------------------------------------------------------

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
        the envelope is over the server's max_payload, a :class:`BusError` when the bus
        client cannot send it.
        """
        nc = self.nc
        msg_id, payload = self.encode(body, headers, trace)
        subj = self.full(subject)
        if len(payload) > nc.max_payload:
            raise PayloadTooLargeError(subj, len(payload), nc.max_payload)
        try:  # (this is the hot path: no helper calls beyond what is needed)
            await nc.publish(subj, payload)
        except nats.errors.Error as exc:
            raise bus_error(exc, subj) from None
        return msg_id

    async def publish_raw(self, subject: str, payload: bytes, reply: str = "") -> None:
        """Publish bytes as they are (no envelope): for tools and tests."""
        nc = self.nc
        subj = self.full(subject)
        if len(payload) > nc.max_payload:
            raise PayloadTooLargeError(subj, len(payload), nc.max_payload)
        try:
            await nc.publish(subj, payload, reply=reply)
        except nats.errors.Error as exc:
            raise bus_error(exc, subj) from None

    async def send_to(self, reply: str, body: Body) -> None:
        """Send ``body`` in an envelope to the reply subject ``reply`` (taken as it is)."""
        _, payload = self.encode(body)
        try:
            await self.nc.publish(reply, payload)
        except nats.errors.Error as exc:
            raise bus_error(exc, reply) from None

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

    async def store_soon(
        self,
        subject: str,
        body: Body,
        *,
        msg_id: str | None = None,
        timeout: float = 2.0,
        deadline: float = 30.0,
    ) -> asyncio.Future[None]:
        """:meth:`publish_stored` without waiting for the stream: the message leaves with this
        turn of the event loop, and the result completes once the stream has it (or fails
        with what :meth:`publish_stored` raises).

        The stream's receipt is awaited without a task of its own: only a message that must
        be sent again (no receipt in ``timeout``, the bus away) gets one, which re-sends it
        as :meth:`publish_stored` does for ``deadline`` seconds from then. Cancelling the
        result stops it. Raises on sending what :meth:`publish_stored` raises.
        """
        msg_id, payload = self.encode(body, None, None, msg_id)
        nc = self.nc
        subj = self.full(subject)
        try:
            stream = await self._stream_or_publish(subj, payload)
            if stream is None:
                done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                done.set_result(None)
                return done
            headers = stored_headers(msg_id, stream)
            receipt = await replies_of(nc).send(subj, payload, timeout=timeout, headers=headers)
        except nats.errors.Error as exc:
            raise bus_error(exc, subj) from None
        done = receipt.get_loop().create_future()  # (get_running_loop() is a getpid() call)
        again = partial(self.store_raw, subj, payload, msg_id, timeout=timeout, deadline=deadline)
        receipt.add_done_callback(partial(_received, done, again))
        done.add_done_callback(lambda _: receipt.cancel())
        return done

    async def _stream_or_publish(self, subj: str, payload: bytes) -> str | None:
        """The stream that stores ``subj``, or None once ``payload`` was published plainly (no
        stream stores it). Raises :class:`PayloadTooLargeError`; nats-py's errors pass."""
        nc = self.nc
        if len(payload) > nc.max_payload:
            raise PayloadTooLargeError(subj, len(payload), nc.max_payload)
        stream = await self._streams.lookup(nc, subj)
        if stream is None:
            await nc.publish(subj, payload)
        return stream

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
        try:
            stream = await self._stream_or_publish(subj, payload)
            if stream is None:
                return
            try:
                await publish_stored(
                    nc, subj, payload, msg_id, stream, timeout=timeout, deadline=deadline
                )
            except BusError:
                self._streams.forget(subj)
                raise
        except nats.errors.Error as exc:
            raise bus_error(exc, subj) from None


def _received(
    done: asyncio.Future[None],
    again: Callable[[], Coroutine[Any, Any, None]],
    receipt: asyncio.Future[bytes],
) -> None:
    """The stream's receipt of :meth:`Publisher.store_soon`'s first try came (or did not):
    ``done`` completes, or a task sends the message ``again``."""
    if done.done():
        return  # cancelled: nobody waits for it any more
    good = not receipt.cancelled() and receipt.exception() is None
    if good and not receipt_problem(receipt.result()):
        done.set_result(None)
        return
    retry = asyncio.get_running_loop().create_task(again())
    retry.add_done_callback(partial(_settle, done))
    done.add_done_callback(lambda _: retry.cancel())


def _settle(done: asyncio.Future[None], retry: asyncio.Task[None]) -> None:
    """``done`` as ``retry`` ended."""
    if done.done():
        return
    if retry.cancelled():
        done.cancel()
    elif (exc := retry.exception()) is not None:
        done.set_exception(exc)
    else:
        done.set_result(None)
