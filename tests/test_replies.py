"""Many requests on one reply subscription (the supervisor's pings and lease renewals), on a
real nats-server: each reply reaches its own request, and the unanswered ones fail in time."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from eeveepy.bus.replies import Replies
from eeveepy.errors import NoRespondersError, RequestTimeoutError


async def test_each_reply_reaches_its_request_and_the_silent_ones_time_out(
    nc: NatsClient,
) -> None:
    subject = "replies." + uuid.uuid4().hex

    async def answer(msg: Msg) -> None:
        if msg.data != b"silent":
            await msg.respond(b"re:" + msg.data)

    sub = await nc.subscribe(subject, cb=answer)
    replies = Replies(nc)
    try:
        sent = [await replies.send(subject, str(n).encode(), timeout=5) for n in range(300)]
        silent = await replies.send(subject, b"silent", timeout=0.3)
        t0 = time.monotonic()
        assert await asyncio.gather(*sent) == [f"re:{n}".encode() for n in range(300)]
        with pytest.raises(RequestTimeoutError):
            await silent
        assert 0.25 < time.monotonic() - t0 < 3
        with pytest.raises(NoRespondersError):
            await replies.request(subject + ".nobody", b"x", timeout=5)
        waiting = await replies.send(subject, b"silent", timeout=30)
    finally:
        await replies.close()
        await sub.unsubscribe()
    with pytest.raises(RequestTimeoutError):  # closing fails what still waits, at once
        await waiting
