"""The floor's relays with eeveepy's parts added, one tier at a time (raw nats-py + JetStream).

``floor+envelopes``: each relay decodes and fully validates what it receives as eeveepy's
envelope (the connector's ``chat.message``, the router's ``command.run``, echo's ``chat.out``)
and encodes what it sends with eeveepy's encoder: the bytes eeveepy puts on the wire.

``floor+envelopes+streams``: as eeveepy's delivery guarantee does it, the line and the reply
are stored publishes (``Nats-Msg-Id``, ``Nats-Expected-Stream``) into streams configured like
eeveepy's chat streams (the harness creates them with eeveepy's ``ensure_chat_streams``), each
receipt awaited by callback on one reply subscription per connection; the receiver of
each stream (router: input, connector: output) keeps the ids it handled on the fast path and
takes the stream's copies through a durable push consumer configured like eeveepy's, keeping
them (nothing decoded) and acknowledging the handled ones in a pass a tick after they came.

``floor+envelopes+streams+result``: echo also answers the router's invocation (a request) with
the command result once its reply is stored, and the router counts a line handled (its copy
acknowledged) only then: message 10 of the hop table in docs/benchmarks.md.

None of eeveepy's runtime runs here (no Ipc, no Operator, no dispatch): what a tier costs over
the one below is the part's, not eeveepy's implementation of it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from eeveepy.protocol.codec import EnvelopeDecoder, EnvelopeEncoder
from eeveepy.protocol.models import (
    ChatMessage,
    ChatUser,
    CommandInvocation,
    CommandResult,
    OutgoingMessage,
)

from .relays import Tier

__all__ = ["ACK_WAIT", "BUSY", "MAX_ACK_PENDING", "MAX_DELIVER", "PREFIX", "TICK", "job"]

PREFIX = "floor"
"""The subjects' prefix (eeveepy's is ``eevee``): streams ``FLOOR_CHAT_IN``, ``FLOOR_CHAT_OUT``."""
NETWORK = "bench"
CHAT_IN_STREAM, CHAT_OUT_STREAM = "FLOOR_CHAT_IN", "FLOOR_CHAT_OUT"
_RUN = f"{PREFIX}.command.run.echo"

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

    def __init__(self, nc: Client, stream: str, durable: str, seen: Seen) -> None:
        self.nc, self.stream, self.durable, self.seen = nc, stream, durable, seen
        self.copies: list[tuple[str, str, float]] = []
        self.wake = asyncio.Event()

    async def start(self) -> asyncio.Task[None]:
        subject = f"{PREFIX}.deliver.{self.stream}.{self.durable}"
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


async def _connect(url: str) -> Client:
    return await nats.connect(url, name="floor")


async def connector(tier: Tier, url: str, port: int, channel: str, nick: str) -> None:
    """Lines in as stored ``chat.message`` envelopes; ``chat.out`` envelopes out to IRC."""
    nc = await _connect(url)
    encoder, decoder = EnvelopeEncoder(f"irc.{NETWORK}"), EnvelopeDecoder(OutgoingMessage)
    seen, stored = Seen(), Stored(nc, CHAT_IN_STREAM)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode())

    async def out(msg: Msg) -> None:
        env = decoder.decode(msg.data, msg.subject)
        if tier.streams and not seen.take(env.id, done=True):
            return
        body = env.body
        writer.write(f"PRIVMSG {body.target} :{body.text}\r\n".encode())

    await nc.subscribe(f"{PREFIX}.chat.out.irc.{NETWORK}", cb=out)
    if tier.streams:
        await stored.start()
        backstop = await Backstop(nc, CHAT_OUT_STREAM, "out_irc_bench", seen).start()
    while line := await reader.readline():
        parts = line.rstrip(b"\r\n").split(b" ", 3)
        if parts[0] == b"PING":
            writer.write(b"PONG " + line[5:])
        elif len(parts) > 1 and parts[1] == b"001":
            writer.write(f"JOIN {channel}\r\n".encode())
        elif len(parts) == 4 and parts[1] == b"PRIVMSG" and parts[3].startswith(b":!echo "):
            who, _, host = parts[0][1:].decode().partition("!")
            room, text = parts[2].decode(), parts[3][1:].decode()
            user = ChatUser(id=who, name=who, host=host)
            body = ChatMessage(
                platform="irc", network=NETWORK, room=room, user=user, text=text, raw=text
            )
            msg_id, payload = encoder.encode(body)
            subject = f"{PREFIX}.chat.in.irc.{NETWORK}.{room}"
            if tier.streams:
                await stored.publish(subject, payload, msg_id)
            else:
                await nc.publish(subject, payload)
    if tier.streams:
        backstop.cancel()


async def router(tier: Tier, url: str) -> None:
    """``chat.message`` in, ``command.run`` out (a request when echo answers it)."""
    nc = await _connect(url)
    decoder, encoder = EnvelopeDecoder(ChatMessage), EnvelopeEncoder("router")
    seen, results, waiting = Seen(), EnvelopeDecoder(CommandResult), dict[str, str]()
    inbox, count = nc.new_inbox(), itertools.count()

    async def line(msg: Msg) -> None:
        env = decoder.decode(msg.data, msg.subject)
        if tier.streams and not seen.take(env.id, done=not tier.result):
            return
        text = env.body.text
        if not text.startswith("!echo "):
            return
        invocation = CommandInvocation(command="echo", text=text[6:], message=env.body)
        _, payload = encoder.encode(invocation, {"trace": env.trace})
        if tier.result:
            reply = f"{inbox}.{next(count)}"
            waiting[reply] = env.id
            await nc.publish(_RUN, payload, reply=reply)
        else:
            await nc.publish(_RUN, payload)

    async def result(msg: Msg) -> None:
        line_id = waiting.pop(msg.subject, "")
        if results.decode(msg.data, msg.subject).body.ok and line_id in seen.ids:
            seen.ids[line_id] = True

    await nc.subscribe(f"{PREFIX}.chat.in.>", cb=line)
    if tier.result:
        await nc.subscribe(inbox + ".*", cb=result)
    if tier.streams:
        await Backstop(nc, CHAT_IN_STREAM, "router", seen).start()
    await asyncio.Event().wait()


async def echo(tier: Tier, url: str) -> None:
    """``command.run`` in, ``chat.out`` out (stored), the result back when the tier has it."""
    nc = await _connect(url)
    decoder, encoder = EnvelopeDecoder(CommandInvocation), EnvelopeEncoder("echo")
    stored = Stored(nc, CHAT_OUT_STREAM)

    async def run(msg: Msg) -> None:
        env = decoder.decode(msg.data, msg.subject)
        chat, trace = env.body.message, env.trace
        out = OutgoingMessage(
            platform=chat.platform,
            network=chat.network,
            target=chat.room,
            text=env.body.text,
            reply_to=chat.message_id,
        )
        headers = {"trace": trace}
        msg_id, payload = encoder.encode(out, headers, msg_id=f"{trace}~cmd.echo~0")
        subject = f"{PREFIX}.chat.out.{chat.platform}.{chat.network}"
        if not tier.streams:
            await nc.publish(subject, payload)
            return
        reply = msg.reply if tier.result else ""

        async def answer() -> None:
            await nc.publish(reply, encoder.encode(CommandResult(ok=True), headers)[1])

        await stored.publish(subject, payload, msg_id, answer if reply else None)

    if tier.streams:
        await stored.start()
    await nc.subscribe(_RUN, queue="cmd.echo", cb=run)
    await asyncio.Event().wait()


def job(tier: Tier, role: str, url: str, rest: list[str]) -> Coroutine[Any, Any, None]:
    """The relay ``role`` of ``tier`` (``rest``: the connector's IRC port, channel, nick)."""
    if role == "connector":
        return connector(tier, url, int(rest[0]), rest[1], rest[2])
    return router(tier, url) if role == "router" else echo(tier, url)
