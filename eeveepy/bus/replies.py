"""Many requests in flight on one reply subscription: every request an operator makes.

Through nats-py's ``request()`` each request costs an inbox token (``secrets``), a future, an
``asyncio.wait_for`` (a timer and a task switch) and a ``Msg`` object for its reply: with
hundreds of operators the supervisor's pings and lease renewals spent most of its CPU there,
and every stored publish (a request for the stream's acknowledgement) paid it on the hot path.
Here every reply comes to one wildcard subscription on the fast path
(:func:`~eeveepy.bus.natsadapter.add_fast_path`), keyed by its subject (the subscription's
inbox and a counter), and one timer (the earliest deadline of those in flight) fails the ones
not answered in time.

:meth:`Replies.send` publishes and returns the future of the reply's payload at once, so one
caller can send a whole round before waiting for any of it. :func:`replies_of` is the one
:class:`Replies` of a connection, made on its first request.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from eeveepy.bus.natsadapter import add_fast_path, bus_error, remove_fast_path
from eeveepy.errors import NoRespondersError, RequestTimeoutError

__all__ = ["Replies", "replies_of"]

_ATTRIBUTE = "_eevee_replies"
"""Where :func:`replies_of` keeps a connection's :class:`Replies` (on the client itself)."""


def replies_of(nc: NatsClient) -> Replies:
    """The :class:`Replies` of ``nc``, shared by everything that requests over it.

    Its subscription ends with the connection; what still waits then times out.
    """
    replies: Replies | None = getattr(nc, _ATTRIBUTE, None)
    if replies is None:
        replies = Replies(nc)
        setattr(nc, _ATTRIBUTE, replies)
    return replies


class Replies:
    """Requests whose replies share one subscription; :meth:`close` ends it (idempotent)."""

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._prefix = ""
        self._sub: NatsSubscription | None = None
        self._count = itertools.count()
        self._waiting: dict[bytes, tuple[asyncio.Future[bytes], str, float]] = {}
        self._deadlines: list[tuple[float, bytes]] = []
        self._timer: asyncio.Handle | None = None
        self._armed_at = 0.0
        """The deadline the timer is armed for (uvloop's timer for a deadline less than a
        millisecond away is a plain ``Handle``, without ``when()``)."""
        self._loop: asyncio.AbstractEventLoop | None = None

    async def send(
        self,
        subject: str,
        payload: bytes,
        *,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> asyncio.Future[bytes]:
        """Publish a request; the future holds the reply's payload, or fails with
        :class:`RequestTimeoutError`, :class:`NoRespondersError` or another
        :class:`~eeveepy.errors.BusError`. Cancel it to stop waiting. Raises a
        :class:`~eeveepy.errors.BusError` when the replies cannot be subscribed to."""
        if self._sub is None:
            prefix = self._nc.new_inbox()
            try:
                sub = await self._nc.subscribe(prefix + ".*", cb=self._on_msg)
            except nats.errors.Error as exc:
                raise bus_error(exc, subject) from None  # the sending, as the caller sees it
            if self._sub is None:
                self._prefix, self._sub = prefix, sub
                add_fast_path(self._nc, sub, self._on_reply)
            else:  # a request sent meanwhile subscribed first: use its subscription
                await sub.unsubscribe()
        loop = self._loop
        if loop is None:  # (asyncio.get_running_loop() is a getpid() call on Python 3.11)
            loop = self._loop = asyncio.get_running_loop()
        reply = f"{self._prefix}.{next(self._count)}"
        key = reply.encode()
        fut: asyncio.Future[bytes] = loop.create_future()
        waiting = self._waiting
        waiting[key] = (fut, subject, timeout)  # before sending: the reply may come at once
        fut.add_done_callback(lambda _: waiting.pop(key, None))
        try:
            await self._nc.publish(subject, payload, reply=reply, headers=headers)
        except nats.errors.Error as exc:
            fut.set_exception(bus_error(exc, subject))
            return fut
        deadline = loop.time() + timeout
        heapq.heappush(self._deadlines, (deadline, key))
        if self._timer is None or deadline < self._armed_at:
            self._arm(loop, deadline)
        return fut

    async def request(
        self,
        subject: str,
        payload: bytes,
        *,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """Publish a request and wait for its reply's payload (see :meth:`send`)."""
        fut = await self.send(subject, payload, timeout=timeout, headers=headers)
        try:
            return await fut
        finally:
            fut.cancel()

    async def close(self) -> None:
        """Unsubscribe; whatever is still waiting fails as unanswered."""
        sub, self._sub = self._sub, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for fut, subject, _ in list(self._waiting.values()):
            if not fut.done():
                fut.set_exception(RequestTimeoutError(f"no reply on {subject}", subject=subject))
        self._waiting.clear()
        self._deadlines.clear()
        if sub is not None:
            remove_fast_path(self._nc, sub)
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass  # the connection is closed already: so is the subscription

    def _on_reply(self, subject: bytes, reply: bytes, payload: bytes) -> None:
        entry = self._waiting.pop(subject, None)
        if entry is None or entry[0].done():
            return  # too late: it timed out, or its sender stopped waiting
        fut, sent_to, _ = entry
        if payload:
            fut.set_result(payload)
        else:  # the server's status reply (503): no subscriber, JetStream not there
            fut.set_exception(NoRespondersError(f"nobody answers on {sent_to}", subject=sent_to))

    async def _on_msg(self, msg: Msg) -> None:
        """The same, for a client without the fast path."""
        self._on_reply(msg.subject.encode(), msg.reply.encode(), msg.data)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._expire)
        self._armed_at = when

    def _expire(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None  # (armed by send)
        now = loop.time()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, key = heapq.heappop(self._deadlines)
            entry = self._waiting.pop(key, None)
            if entry is not None and not entry[0].done():
                fut, subject, timeout = entry
                fut.set_exception(
                    RequestTimeoutError(
                        f"no reply on {subject} within {timeout:g} s", subject=subject
                    )
                )
        while self._deadlines and self._deadlines[0][1] not in self._waiting:
            heapq.heappop(self._deadlines)  # answered already
        if self._deadlines:
            self._arm(loop, self._deadlines[0][0])
