"""The delivery guarantee's bus work for the floor's tiers, as eeveepy does it, on raw nats-py.

:class:`Stored`: stored publishes into a stream (``Nats-Msg-Id``, ``Nats-Expected-Stream``),
each receipt awaited by a callback on one reply subscription per connection.
:class:`Backstop`: a receiver's durable push consumer of the stream that stores what it takes
on the fast path, configured like eeveepy's; the copies are kept as they come (nothing
decoded) and acknowledged in a pass a tick later, once :class:`Seen` says the fast path is done
with them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

__all__ = [
    "ACK_WAIT",
    "BUSY",
    "GRACE",
    "MAX_ACK_PENDING",
    "MAX_DELIVER",
    "ONCE_LIMIT",
    "TICK",
    "Backstop",
    "Seen",
    "Stored",
]

# eeveepy's values (eeveepy.bus.backstop, eeveepy.bus.delivery), kept equal by a test; not
# imported, so a relay's memory holds no more of eeveepy than the protocol.
TICK = 0.5
BUSY = 256
GRACE = 2.0
ONCE_LIMIT = 8192
ACK_WAIT = 5.0
MAX_DELIVER = 10
MAX_ACK_PENDING = 1024


class Seen:
    """The ids a receiver took on the fast path (bounded, oldest forgotten): True once done."""

    def __init__(self) -> None:
        self.ids: dict[str, bool] = {}

    def take(self, msg_id: str, *, done: bool) -> bool:
        """Note ``msg_id``; False when it was taken before (a repeat: drop it)."""
        ids = self.ids
        if msg_id in ids:
            return False
        if len(ids) >= ONCE_LIMIT:
            del ids[next(iter(ids))]
        ids[msg_id] = done
        return True


class Stored:
    """Stored publishes on one connection, each receipt awaited by a callback on one reply
    subscription (no future, no task per message)."""

    def __init__(self, nc: Client, stream: str) -> None:
        self.nc, self.stream = nc, stream
        self.inbox = nc.new_inbox()
        self.waiting: dict[str, Callable[[], Awaitable[None]] | None] = {}
        self.count = itertools.count()

    async def start(self) -> None:
        await self.nc.subscribe(self.inbox + ".*", cb=self._receipt)

    async def publish(
        self,
        subject: str,
        payload: bytes,
        msg_id: str,
        then: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Publish into the stream; ``then`` runs once the stream has it."""
        reply = f"{self.inbox}.{next(self.count)}"
        self.waiting[reply] = then
        headers = {"Nats-Msg-Id": msg_id, "Nats-Expected-Stream": self.stream}
        await self.nc.publish(subject, payload, reply=reply, headers=headers)

    async def _receipt(self, msg: Msg) -> None:
        then = self.waiting.pop(msg.subject, None)
        receipt = json.loads(msg.data)
        if "error" in receipt or "seq" not in receipt:
            print(f"not stored: {receipt}", flush=True)  # (the relay's log)
        elif then is not None:
            await then()


class Backstop:
    """The stream's copies of what the fast path handles: kept as they come, acknowledged in a
    pass a tick after (``TICK``; ten times as often from ``BUSY`` copies), once ``seen`` says
    the fast path is done with them (or ``GRACE`` seconds passed: recovered, in eeveepy)."""

    def __init__(self, nc: Client, prefix: str, stream: str, durable: str, seen: Seen) -> None:
        self.nc, self.prefix, self.stream, self.durable = nc, prefix, stream, durable
        self.seen = seen
        self.copies: list[tuple[str, str, float]] = []
        self.wake = asyncio.Event()

    async def start(self) -> asyncio.Task[None]:
        subject = f"{self.prefix}.deliver.{self.stream}.{self.durable}"
        config = ConsumerConfig(
            durable_name=self.durable,
            deliver_subject=subject,
            deliver_group=self.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT,
            max_deliver=MAX_DELIVER,
            max_ack_pending=MAX_ACK_PENDING,
        )
        await self.nc.jetstream().add_consumer(self.stream, config)
        await self.nc.subscribe(subject, queue=self.durable, cb=self._keep)
        return asyncio.get_running_loop().create_task(self._run())

    async def _keep(self, msg: Msg) -> None:
        msg_id = msg.headers.get("Nats-Msg-Id", "") if msg.headers else ""
        self.copies.append((msg.reply, msg_id, asyncio.get_running_loop().time()))
        self.wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            await asyncio.sleep(TICK if len(self.copies) < BUSY else TICK / 10)
            self.wake.clear()
            now, ids, left = loop.time(), self.seen.ids, []
            for copy in self.copies:
                reply, msg_id, came = copy
                if ids.get(msg_id) or now - came > GRACE:
                    await self.nc.publish(reply, b"+ACK")
                else:
                    left.append(copy)
            self.copies = left
            if left:
                self.wake.set()
