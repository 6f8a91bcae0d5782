"""The floor's relays with eeveepy's parts added, one tier at a time (raw nats-py + JetStream).

``floor+envelopes``: each relay decodes and fully validates what it receives as eeveepy's
envelope (the connector's ``chat.message``, the router's ``command.run``, echo's ``chat.out``)
and encodes what it sends with eeveepy's encoder: the bytes eeveepy puts on the wire.

``floor+envelopes+streams``: as 2, plus the delivery guarantee's bus work as eeveepy does it
(:mod:`tests.bench.peers.guarantee`): the line and the reply are stored publishes into streams
configured like eeveepy's chat streams (the harness creates them with eeveepy's
``ensure_chat_streams``), and the receiver of each (router: input, connector: output) takes
the stream's copies through a backstop consumer and acknowledges them in passes.

``floor+envelopes+streams+result``: echo also answers the router's invocation (a request) with
the command result once its reply is stored, and the router counts a line handled (its copy
acknowledged) only then: message 10 of the hop table in docs/benchmarks.md.

``floor+envelopes+journal+result``: as the one above, but the line is no stored publish: the
connector keeps it in a journal (:mod:`tests.bench.peers.journal`) and sends it as a plain
publish with a reply subject, which the router answers (``taken``) once echo's result is in
(at once for a line that is no command); the reply is stored as above.

None of eeveepy's runtime runs here (no Ipc, no Operator, no dispatch): what a tier costs over
the one below is the part's, not eeveepy's implementation of it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from eeveepy.protocol.codec import EnvelopeDecoder, EnvelopeEncoder
from eeveepy.protocol.models import (
    ChatMessage,
    ChatUser,
    CommandInvocation,
    CommandResult,
    OutgoingMessage,
)

from .guarantee import Backstop, Seen, Stored
from .journal import TAKEN, Journal
from .relays import Tier, echo_lines, irc

__all__ = ["CHAT_IN_STREAM", "CHAT_OUT_STREAM", "PREFIX", "job"]

PREFIX = "floor"
"""The subjects' prefix (eeveepy's is ``eevee``): streams ``FLOOR_CHAT_IN``, ``FLOOR_CHAT_OUT``."""
NETWORK = "bench"
JOURNAL = "chat-in-journal"
"""The journal tier's connector's journal, in its working directory (``<nick>-chat-in-journal``)."""
CHAT_IN_STREAM, CHAT_OUT_STREAM = "FLOOR_CHAT_IN", "FLOOR_CHAT_OUT"
_RUN = f"{PREFIX}.command.run.echo"


async def _connect(url: str) -> Client:
    return await nats.connect(url, name="floor")


async def connector(tier: Tier, url: str, port: int, channel: str, nick: str) -> None:
    """Lines in as stored ``chat.message`` envelopes; ``chat.out`` envelopes out to IRC."""
    nc = await _connect(url)
    encoder, decoder = EnvelopeEncoder(f"irc.{NETWORK}"), EnvelopeDecoder(OutgoingMessage)
    seen, stored = Seen(), Stored(nc, CHAT_IN_STREAM)
    journal = Journal(nc, Path(f"{nick}-{JOURNAL}")) if tier.journal else None
    reader, writer = await irc(port, nick)

    async def out(msg: Msg) -> None:
        env = decoder.decode(msg.data, msg.subject)
        if tier.streams and not seen.take(env.id, done=True):
            return
        body = env.body
        writer.write(f"PRIVMSG {body.target} :{body.text}\r\n".encode())

    await nc.subscribe(f"{PREFIX}.chat.out.irc.{NETWORK}", cb=out)
    backstop = sweep = None
    if journal is not None:
        sweep = await journal.start()
    elif tier.streams:
        await stored.start()
    if tier.streams and tier.backstops:
        backstop = await Backstop(nc, PREFIX, CHAT_OUT_STREAM, "out_irc_bench", seen).start()
    async for parts in echo_lines(reader, writer, channel):
        who, _, host = parts[0][1:].decode().partition("!")
        room, text = parts[2].decode(), parts[3][1:].decode()
        user = ChatUser(id=who, name=who, host=host)
        body = ChatMessage(
            platform="irc", network=NETWORK, room=room, user=user, text=text, raw=text
        )
        msg_id, payload = encoder.encode(body)
        subject = f"{PREFIX}.chat.in.irc.{NETWORK}.{room}"
        if journal is not None:
            await journal.publish(subject, payload, msg_id)
        elif tier.streams:
            await stored.publish(subject, payload, msg_id)
        else:
            await nc.publish(subject, payload)
    for task in (backstop, sweep):
        if task is not None:
            task.cancel()


async def router(tier: Tier, url: str) -> None:
    """``chat.message`` in, ``command.run`` out (a request when echo answers it)."""
    nc = await _connect(url)
    decoder, encoder = EnvelopeDecoder(ChatMessage), EnvelopeEncoder("router")
    seen, results, waiting = Seen(), EnvelopeDecoder(CommandResult), dict[str, tuple[str, str]]()
    inbox, count = nc.new_inbox(), itertools.count()

    async def line(msg: Msg) -> None:
        env = decoder.decode(msg.data, msg.subject)
        if tier.journal and msg.reply and seen.ids.get(env.id):
            await nc.publish(msg.reply, TAKEN)  # a repeat of a line done: its answer was lost
            return
        if tier.streams and not seen.take(env.id, done=not tier.result):
            return  # a repeat (of a line not done yet: the journal's is sent again later)
        text = env.body.text
        if not text.startswith("!echo "):
            if tier.journal and msg.reply:  # no command: done at once
                seen.ids[env.id] = True
                await nc.publish(msg.reply, TAKEN)
            return
        invocation = CommandInvocation(command="echo", text=text[6:], message=env.body)
        _, payload = encoder.encode(invocation, {"trace": env.trace})
        if tier.result:
            reply = f"{inbox}.{next(count)}"
            waiting[reply] = (env.id, msg.reply or "")
            await nc.publish(_RUN, payload, reply=reply)
        else:
            await nc.publish(_RUN, payload)

    async def result(msg: Msg) -> None:
        line_id, taken = waiting.pop(msg.subject, ("", ""))
        if results.decode(msg.data, msg.subject).body.ok and line_id in seen.ids:
            seen.ids[line_id] = True
            if tier.journal and taken:
                await nc.publish(taken, TAKEN)

    await nc.subscribe(f"{PREFIX}.chat.in.>", cb=line)
    if tier.result:
        await nc.subscribe(inbox + ".*", cb=result)
    if tier.streams and tier.backstops and not tier.journal:
        await Backstop(nc, PREFIX, CHAT_IN_STREAM, "router", seen).start()
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
