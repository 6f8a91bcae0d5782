"""A connector's ``chat.out``: every message sent once, and none lost while the connector is down.

A connector takes ``{p}.chat.out.<platform>.<network>`` twice: at once from a plain
subscription (the fast path) and from the chat output stream through a durable consumer of
its own (the backstop, :mod:`eeveepy.bus.backstop`: what was published while the connector was
down or restarting, or lost on the way). Each message (by envelope id) is given to the platform
once, whichever copy comes first, and the stream's copy is acknowledged (in a batch) only once
the platform has really sent it; a connector that dies first gets it again when it is back.
What was sent is also written down at once (:class:`~eeveepy.connector.sent.SentLog`, in the
operator's data directory), so a connector killed before the stream's copies of what it sent
were acknowledged does not send them again when it is back. See "Delivery" in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from eeveepy.bus.delivery import Handling, Once
from eeveepy.bus.ipc import Subscription
from eeveepy.bus.names import outbox_consumer_name
from eeveepy.connector.sent import SentLog
from eeveepy.protocol.models import Envelope, OutgoingMessage

if TYPE_CHECKING:
    from eeveepy.runtime.operator import Operator

Send = Callable[[Envelope[OutgoingMessage], Callable[[], None]], Awaitable[None] | None]
"""Hands one message to the platform, and a function to call the moment it was sent (before
anything else is); an awaitable result completes once it was sent (a future is waited for
without a task)."""


def _nothing() -> None:
    pass


SENT_FILE = "chat-out-sent"
"""The file of the ids sent, in the connector's data directory."""


class Outbox:
    """The ``chat.out`` of one network, for the connector operator ``op``."""

    def __init__(self, op: Operator[Any], send: Send) -> None:
        self._op = op
        self._send = send
        self._once = Once()
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._sent: SentLog | None = None

    async def open(self, platform: str, network: str) -> None:
        """Start taking the network's outgoing messages (closing what was open)."""
        await self.close()
        if self._sent is None:  # read once: a new network keeps what was sent before
            self._sent = SentLog(self._op.data_dir / SENT_FILE, self._op.log)
        self._sent.open()
        ipc = self._op.ipc
        subject = self._op.subjects.chat_out(platform, network)
        self._subs = [
            await ipc.subscribe(subject, self._on_fast),
            await ipc.subscribe(
                subject,
                self._on_stored,
                durable=outbox_consumer_name(self._op.id),
                backstop=self._once,
            ),
        ]

    async def close(self) -> None:
        """Stop taking messages; what was not sent yet is delivered again after a restart."""
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.unsubscribe()
        tasks, self._tasks = set(self._tasks), set()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        if self._sent is not None:
            self._sent.close()

    async def _on_fast(self, env: Envelope[OutgoingMessage]) -> None:
        self._take(env)

    async def _on_stored(self, env: Envelope[OutgoingMessage]) -> None:
        self._take(env)  # one the fast path never saw

    def _take(self, env: Envelope[OutgoingMessage]) -> Handling:
        handling, first = self._once.take(env.id)
        sent = self._sent
        if not first or (sent is not None and env.id in sent):
            return handling  # (done: a stored copy of what was sent is acknowledged)
        on_sent: Callable[[], None] = _nothing if sent is None else partial(sent.add, env.id)
        try:
            result = self._send(env, on_sent)
        except Exception as exc:
            self._op.log.error("could not send", target=env.body.target, error=repr(exc))
            return handling
        if isinstance(result, asyncio.Future):
            result.add_done_callback(partial(self._finished, handling.start(), env))
        elif inspect.isawaitable(result):
            task = asyncio.ensure_future(self._wait_sent(result, handling.start(), env))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            on_sent()
        return handling

    def _finished(
        self, handling: Handling, env: Envelope[OutgoingMessage], result: asyncio.Future[None]
    ) -> None:
        if not result.cancelled() and (exc := result.exception()) is not None:
            self._op.log.error("could not send", target=env.body.target, error=repr(exc))
        handling.done = True  # (what ``await handling.finish()`` does, from a callback)

    async def _wait_sent(
        self, result: Awaitable[None], handling: Handling, env: Envelope[OutgoingMessage]
    ) -> None:
        try:
            await result
        except Exception as exc:
            self._op.log.error("could not send", target=env.body.target, error=repr(exc))
        await handling.finish()
