"""Request/reply over the ipc layer: asking (:meth:`Requester.request`) and answering.

A handler answers a request by returning a body (the subscription sends it) or with
:meth:`Requester.respond`; :meth:`Requester.current` is the envelope being handled and
:meth:`Requester.hold` takes over the acknowledgement of a durable one.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, TypeVar

import nats.errors
from nats.aio.msg import Msg

from eeveepy.bus.delivery import Delivery
from eeveepy.bus.natsadapter import bus_error
from eeveepy.bus.publish import Publisher
from eeveepy.bus.replies import replies_of
from eeveepy.errors import EnvelopeError, PayloadTooLargeError, RemoteError
from eeveepy.protocol.codec import EnvelopeDecoder
from eeveepy.protocol.models import Body, Envelope, ErrorReply
from eeveepy.protocol.subjects import Subjects

__all__ = ["Requester"]

B = TypeVar("B", bound=Body)


class Requester(Publisher):
    """A :class:`Publisher` that also asks and answers requests."""

    def __init__(self, subjects: Subjects, source: str, *, logger: Any = None) -> None:
        super().__init__(subjects, source, logger=logger)
        self._decoders: dict[type[Body], Any] = {}

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
        (the responder answered with an error), :class:`EnvelopeError` (a malformed reply) or
        another :class:`~eeveepy.errors.BusError` (the bus client could not send it).
        """
        nc = self.nc
        _, payload = self.encode(body, headers)
        subj = self.full(subject)
        if len(payload) > nc.max_payload:
            raise PayloadTooLargeError(subj, len(payload), nc.max_payload)
        # One reply subscription and one timer for every request of the connection: raises
        # RequestTimeoutError, NoRespondersError or another BusError itself.
        data = await replies_of(nc).request(subj, payload, timeout=timeout)
        try:
            return self._decoder(reply_model).decode(data, subj)
        except EnvelopeError:
            try:
                err = self._decoder(ErrorReply).decode(data, subj)
            except EnvelopeError:
                raise
            raise RemoteError(f"{err.source}: {err.body.message}", err.body.error) from None

    async def gather(
        self,
        subject: str,
        body: Body,
        reply_model: type[B],
        *,
        timeout: float = 2.0,
        quiet: float = 0.3,
        headers: dict[str, str] | None = None,
    ) -> list[Envelope[B]]:
        """Send a request that several parties answer (every supervisor on the bus) and
        collect the replies: until ``quiet`` seconds pass without one after the first, or
        ``timeout`` in all. Malformed replies are left out; none at all gives ``[]``."""
        nc = self.nc
        _, payload = self.encode(body, headers)
        subj = self.full(subject)
        inbox = nc.new_inbox()
        replies: list[bytes] = []
        arrived = asyncio.Event()

        async def collect(msg: Msg) -> None:
            replies.append(msg.data)
            arrived.set()

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            sub = await nc.subscribe(inbox, cb=collect)
            try:
                await nc.publish(subj, payload, reply=inbox)
                while (left := deadline - loop.time()) > 0:
                    arrived.clear()
                    try:
                        await asyncio.wait_for(
                            arrived.wait(), min(left, quiet) if replies else left
                        )
                    except TimeoutError:
                        break
            finally:
                await sub.unsubscribe()
        except nats.errors.Error as exc:
            raise bus_error(exc, subj) from None
        decoder = self._decoder(reply_model)
        envelopes = []
        for data in replies:
            with contextlib.suppress(EnvelopeError):
                envelopes.append(decoder.decode(data, subj))
        return envelopes

    def _decoder(self, model: type[B]) -> EnvelopeDecoder[B]:
        decoder: EnvelopeDecoder[B] | None = self._decoders.get(model)
        if decoder is None:
            decoder = self._decoders[model] = EnvelopeDecoder(model)
        return decoder

    async def respond(self, body: Body) -> bool:
        """Answer the request being handled; False when it was not a request."""
        current = self.handling.get()
        if current is None or not current[0]:
            return False
        await self.send_to(current[0], body)
        return True

    def current(self) -> Envelope[Any] | None:
        """The envelope being handled in this task, if any."""
        delivery = self.handling.get()
        return delivery[1] if delivery else None

    def hold(self) -> Delivery | None:
        """Take over the acknowledgement of the durable message being handled.

        The ipc layer then does not acknowledge it when the handler returns: call ``ack()``
        (or ``nak()``/``term()``) on the result once the work is really done, right after
        publishing its reply. Until then it is kept alive; if this process dies first, it is
        delivered again. None when the message being handled is not a durable delivery.
        """
        current = self.handling.get()
        delivery = current[2] if current else None
        if delivery is not None:
            delivery.held = True
        return delivery
