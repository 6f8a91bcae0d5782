"""Where the logging operator's events come from: the log stream, or a plain subscription."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from datetime import datetime
from typing import TYPE_CHECKING, Final

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from eeveepy.errors import StreamMissingError
from eeveepy.logs import stream_name

from .settings import DURABLE, LoggingSettings

if TYPE_CHECKING:
    from .service import Service

FETCH_BATCH: Final = 256
"""Most messages fetched from the stream at once."""
FETCH_TIMEOUT: Final = 1.0
"""Seconds one fetch waits for messages; also the longest a stop waits for the consumer."""
MAX_ACK_PENDING: Final = 4 * FETCH_BATCH
"""Unacknowledged messages the server lets the consumer have (set when it is created)."""
ACK_WAIT: Final = 30.0
"""Seconds before the server redelivers a message that was not acknowledged."""
RETRY_DELAY: Final = 5.0
"""Seconds before a message that could not be written is redelivered."""
CONSUMER_CHECK: Final = 30.0
"""Seconds of idle fetching after which the consumer is checked to still exist."""
STREAM_RECHECK: Final = 30.0
"""Seconds between looks for the stream while on the plain subscription."""
CORE_QUEUE_LIMIT: Final = 100_000
"""Events buffered on the plain subscription (while halted or slow) before dropping."""


class Source:
    """Where the events come from: the stream's durable consumer, or a plain subscription.

    One per settings generation; :meth:`stop` ends it after the batch in hand is written and
    acknowledged.
    """

    def __init__(self, svc: Service, nc: NatsClient, settings: LoggingSettings) -> None:
        self.svc = svc
        self.nc = nc
        self.settings = settings
        self.log = svc.op.log
        self.prefix = svc.op.subjects.prefix
        self.subject = f"{self.prefix}.log.>"
        self.stream = stream_name(self.prefix)
        self.quit = asyncio.Event()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.from_subscription = False
        self.stream_created: datetime | None = None
        self.acked_seq = 0  # highest stream sequence written and acknowledged

    async def stop(self, timeout: float) -> None:
        self.quit.set()
        self.wake.set()
        task = self.task
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            self.log.warning("log consumer did not stop in time: cancelled", timeout=timeout)
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, cut short by :meth:`stop`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.quit.wait(), seconds)

    async def _until_resumed(self) -> bool:
        """Wait while the operator is halted; False once stopping."""
        while self.svc.halted and not self.quit.is_set():
            self.wake.clear()
            await self.wake.wait()
        return not self.quit.is_set()

    async def run(self) -> None:
        """Consume until stopped; never raises (errors are logged, rate-limited, and retried)."""
        if not self.settings.stream:
            await self._consume_core(recheck=False)
            return
        backoff = 0.5
        while not self.quit.is_set():
            psub: JetStreamContext.PullSubscription | None = None
            started = time.monotonic()
            try:
                psub = await self._bind_waiting()
                if psub is None:
                    if self.quit.is_set():
                        return
                    self.log.warning(
                        "no log stream: writing from a plain subscription; events published "
                        "while this operator is down will be lost",
                        stream=self.stream,
                        waited_s=self.settings.stream_wait,
                    )
                    psub = await self._consume_core(recheck=True)
                    if psub is None:
                        return
                    self.log.info("log stream found: reading it", stream=self.stream)
                await self._consume_stream(psub)  # returns once stopping
            except Exception as exc:
                if self.quit.is_set() or self.nc.is_closed:
                    return  # stopping: the connection closing under the consumer is no failure
                if time.monotonic() - started > 60:
                    backoff = 0.5
                self.log.warning(
                    "log consumer failed: retrying", error=repr(exc), retry_in_s=backoff
                )
                await self._sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                if psub is not None:
                    with contextlib.suppress(Exception):
                        await psub.unsubscribe()

    # -- JetStream -----------------------------------------------------------------------------

    async def _bind(self) -> JetStreamContext.PullSubscription:
        """Bind the durable consumer (created if missing); raise :class:`StreamMissingError`."""
        js = self.nc.jetstream()
        try:
            info = await js.stream_info(self.stream)
        except (NotFoundError, NoRespondersError) as exc:
            raise StreamMissingError(self.stream) from exc
        config = ConsumerConfig(
            durable_name=DURABLE,
            description="eevee logging operator: log events written to files",
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT,
            max_ack_pending=MAX_ACK_PENDING,
            filter_subject=self.subject,
        )
        # Where a consumer created now starts (an existing one goes on where it was):
        if self.acked_seq and info.created is not None and info.created == self.stream_created:
            # the same stream lost our consumer: go on after what was written
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = self.acked_seq + 1
        elif self.from_subscription:
            # what the stream holds came through the plain subscription already
            config.deliver_policy = DeliverPolicy.NEW
        if info.created != self.stream_created:
            self.stream_created, self.acked_seq = info.created, 0
        psub = await js.pull_subscribe(
            self.subject, durable=DURABLE, stream=self.stream, config=config
        )
        self.from_subscription = False
        return psub

    async def _bind_waiting(self) -> JetStreamContext.PullSubscription | None:
        """Bind, waiting up to ``stream_wait`` seconds for the stream; None if it never came."""
        deadline = time.monotonic() + self.settings.stream_wait
        while True:
            try:
                return await self._bind()
            except StreamMissingError:
                if time.monotonic() >= deadline or self.quit.is_set():
                    return None
                await self._sleep(min(0.25, max(deadline - time.monotonic(), 0.0)))

    async def _consume_stream(self, psub: JetStreamContext.PullSubscription) -> None:
        """Fetch, write, acknowledge every message, until stopped; raise on consumer errors."""
        idle = 0.0
        try:
            while await self._until_resumed():
                try:
                    msgs = await psub.fetch(FETCH_BATCH, timeout=FETCH_TIMEOUT)
                except TimeoutError:  # nothing new (nats' TimeoutError is one too)
                    idle += FETCH_TIMEOUT
                    if idle >= CONSUMER_CHECK:
                        idle = 0.0
                        await psub.consumer_info()  # NotFoundError if deleted: rebind
                    continue
                idle = 0.0
                if self.svc.halted:  # halted during the fetch: give them back for later
                    for msg in msgs:
                        await msg.nak()
                    continue
                await self._handle(msgs)
        finally:
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=1)  # the acks reach the server before we go

    async def _handle(self, msgs: list[Msg]) -> None:
        result = await self.svc.write([(m.subject, m.data) for m in msgs])
        failed = set(result.failed)
        for index, msg in enumerate(msgs):
            # Every message is acknowledged (invalid ones too, or they would come back
            # forever); only those that could not be written are sent back for later.
            if index in failed:
                await msg.nak(delay=RETRY_DELAY)
            else:
                await msg.ack()
        if not failed:
            with contextlib.suppress(Exception):  # only for a consumer lost and created again
                self.acked_seq = max(self.acked_seq, msgs[-1].metadata.sequence.stream)

    # -- the plain subscription ----------------------------------------------------------------

    async def _consume_core(self, *, recheck: bool) -> JetStreamContext.PullSubscription | None:
        """Write from a plain subscription until stopped, or until the stream exists (then
        return its bound consumer; the subscription ends only after the consumer is bound)."""
        queue: deque[tuple[str, bytes]] = deque()
        svc = self.svc

        async def received(msg: Msg) -> None:
            if len(queue) >= CORE_QUEUE_LIMIT:
                svc.counts.dropped += 1
                return
            queue.append((msg.subject, msg.data))
            self.wake.set()

        sub = await self.nc.subscribe(self.subject, cb=received)
        next_check = time.monotonic() + STREAM_RECHECK
        self.from_subscription = recheck
        try:
            while not self.quit.is_set():
                if queue and not svc.halted:
                    batch = [queue.popleft() for _ in range(min(len(queue), 4 * FETCH_BATCH))]
                    await svc.write(batch)
                    continue
                self.wake.clear()
                wait = next_check - time.monotonic() if recheck else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), wait)
                if recheck and time.monotonic() >= next_check:
                    next_check = time.monotonic() + STREAM_RECHECK
                    try:
                        return await self._bind()
                    except StreamMissingError:
                        pass
                    except Exception as exc:
                        self.log.warning("cannot bind the log stream", error=repr(exc))
            return None
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if queue:  # received already: write it rather than lose it
                with contextlib.suppress(Exception):
                    await svc.write(list(queue))
