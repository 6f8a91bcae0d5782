"""Many requests on one reply subscription (the supervisor's pings and lease renewals, every
request and stored publish of an operator), on a real nats-server: each reply reaches its own
request, and the unanswered ones fail in time."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
import uuid

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from eeveepy.bus.client import BusConfig, connect
from eeveepy.bus.delivery import publish_stored
from eeveepy.bus.ipc import Ipc
from eeveepy.bus.replies import Replies, replies_of
from eeveepy.errors import NoRespondersError, RequestTimeoutError
from eeveepy.protocol.models import Ping, Pong
from eeveepy.protocol.subjects import Subjects


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


async def test_requests_and_stored_publishes_share_the_connections_replies(
    nc: NatsClient,
) -> None:
    """Every request of an ipc and every stored publish on ``nc`` waits on one subscription
    (replies_of): the second and later add none. The stored publish's headers arrive as sent."""
    prefix = "replies" + uuid.uuid4().hex[:8]
    ipc = Ipc(Subjects(prefix), "test.asker")
    await ipc.attach(nc)
    seen: list[dict[str, str]] = []

    async def pong(msg: Msg) -> None:
        await msg.respond(ipc.encode(Pong(operator="x", state="running"))[1])

    async def stream(msg: Msg) -> None:  # plays the stream: acknowledges what it "stored"
        seen.append(dict(msg.headers or {}))
        await msg.respond(json.dumps({"stream": "S", "seq": len(seen)}).encode())

    subs = [
        await nc.subscribe(f"{prefix}.operator.ping.x", cb=pong),
        await nc.subscribe(f"{prefix}.stored", cb=stream),
        await nc.subscribe(f"{prefix}.silent"),  # never answers
    ]
    try:
        await ipc.request("operator.ping.x", Ping(), Pong, timeout=5)
        count = len(nc._subs)  # (nats-py's table of this connection's subscriptions)
        for n in range(20):
            reply = await ipc.request("operator.ping.x", Ping(), Pong, timeout=5)
            assert reply.body.operator == "x"
            seq = await publish_stored(nc, f"{prefix}.stored", b"{}", f"id{n}", "S", timeout=5)
            assert seq == n + 1
        assert len(nc._subs) == count, "each request subscribed on its own"
        assert replies_of(nc) is replies_of(nc)
        assert seen[3] == {"Nats-Msg-Id": "id3", "Nats-Expected-Stream": "S"}
        t0 = time.monotonic()
        with pytest.raises(RequestTimeoutError, match=rf"{prefix}\.silent within 0\.2 s"):
            await ipc.request("silent", Ping(), Pong, timeout=0.2)
        assert 0.15 < time.monotonic() - t0 < 2
        assert not replies_of(nc)._waiting, "answered and timed-out requests are forgotten"
    finally:
        await ipc.detach()
        for sub in subs:
            await sub.unsubscribe()


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed")
def test_deadlines_under_a_millisecond_away_on_uvloop(nats_url: str) -> None:
    """uvloop schedules a deadline less than a millisecond away as a plain callback (no
    ``when()``): a request sent while such a timer is armed still times out, as does the one
    after it (operators run on uvloop: the router's requests failed here under load)."""
    from eeveepy.aio import loop_factory, run  # uvloop's factory, as operators use it

    async def main() -> None:
        nc = await connect(BusConfig(url=nats_url), name="tests")
        replies = Replies(nc)
        subject = "replies." + uuid.uuid4().hex

        async def silent(msg: Msg) -> None:
            pass  # never answers

        sub = await nc.subscribe(subject, cb=silent)
        try:
            first = await replies.send(subject, b"a", timeout=0.0002)
            second = await replies.send(subject, b"b", timeout=0.0001)
            for fut in (first, second):
                with pytest.raises(RequestTimeoutError):
                    await fut
        finally:
            await replies.close()
            await sub.unsubscribe()
            await nc.close()

    run(main(), loop_factory("uvloop"))
