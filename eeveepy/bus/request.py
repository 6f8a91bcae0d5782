"""Request/reply over the ipc layer: asking (:meth:`Requester.request`) and answering.

A handler answers a request by returning a body (the subscription sends it) or with
:meth:`Requester.respond`; :meth:`Requester.current` is the envelope being handled and
:meth:`Requester.hold` takes over the acknowledgement of a durable one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

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

__all__ = ["Asked", "Requester"]

B = TypeVar("B", bound=Body)


class Asked(Generic[B]):
    """A request sent (:meth:`Requester.ask`), its reply still to come."""

    __slots__ = ("_decoder", "_errors", "_future", "_subject")

    def __init__(
        self,
        future: asyncio.Future[bytes],
        subject: str,
        decoder: EnvelopeDecoder[B],
        errors: EnvelopeDecoder[ErrorReply],
    ) -> None:
        self._future = future
        self._subject = subject
        self._decoder = decoder
        self._errors = errors

    async def reply(self) -> Envelope[B]:
        """Wait for the reply (once); raises what :meth:`Requester.request` raises."""
        try:
            await self._future
        finally:
            self._future.cancel()  # (no-op once answered) stop waiting when cancelled
        return self.result()

    def result(self) -> Envelope[B]:
        """The reply, once :meth:`done`; raises what :meth:`Requester.request` raises (and
        ``CancelledError`` when it was cancelled)."""
        data = self._future.result()
        try:
            return self._decoder.decode(data, self._subject)
        except EnvelopeError:
            try:
                err = self._errors.decode(data, self._subject)
            except EnvelopeError:
                raise
            raise RemoteError(f"{err.source}: {err.body.message}", err.body.error) from None

    def done(self) -> bool:
        """True once the reply came, or the request failed or was cancelled."""
        return self._future.done()

    def when_done(self, callback: Callable[[Asked[B]], object]) -> None:
        """Call ``callback(self)`` once :meth:`done` (from the event loop): a caller that has
        nothing else to do with the reply than look at it needs no task to wait for it."""
        self._future.add_done_callback(lambda _: callback(self))

    def cancel(self) -> None:
        """Stop waiting for the reply (a late one is dropped)."""
        self._future.cancel()


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
        asked = await self.ask(subject, body, reply_model, timeout=timeout, headers=headers)
        return await asked.reply()

    async def ask(
        self,
        subject: str,
        body: Body,
        reply_model: type[B],
        *,
        timeout: float = 2.0,
        headers: dict[str, str] | None = None,
    ) -> Asked[B]:
        """:meth:`request` in two steps: send it now (without waiting for anything: it leaves
        with this turn of the event loop), and wait for its reply later with
        :meth:`Asked.reply`. A caller that has more to do in this turn (the router, the next
        chat line) sends first and waits elsewhere. Raises what :meth:`request` raises on
        sending (:class:`PayloadTooLargeError`, a :class:`~eeveepy.errors.BusError`)."""
        nc = self.nc
        _, payload = self.encode(body, headers)
        subj = self.full(subject)
        if len(payload) > nc.max_payload:
            raise PayloadTooLargeError(subj, len(payload), nc.max_payload)
        # One reply subscription and one timer for every request of the connection: fails
        # with RequestTimeoutError, NoRespondersError or another BusError itself.
        future = await replies_of(nc).send(subj, payload, timeout=timeout)
        return Asked(future, subj, self._decoder(reply_model), self._decoder(ErrorReply))

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
