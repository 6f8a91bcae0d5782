"""The bus hops of one eeveepy command round trip, as seen by a tap on the bus.

A client with the CLI's credentials (from the supervisor's state file) subscribes to every
subject while one ``!echo`` goes through the system, idle otherwise; each message published
from the IRC command's send until a little after its answer is listed with what it is. Health
pings, the log history's fetches, lease renewals and their answers, which come on their own
clock, are left out.

Three of them make the user-visible path (the line, the invocation, the reply); the others
are the delivery guarantee (stream receipts, the streams' copies to the backstops, their
acknowledgements), the command's result to the router, and the other default operators' own
work (seen's key-value write).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from tests.bench.ircload import round_trip
from tests.irc_servers import IrcClient
from tests.supervisor_fixtures import System

from .bots import Running

__all__ = ["PATH", "Hop", "describe", "label", "tap"]

SETTLE = 1.2
"""Seconds the tap keeps listening after the answer reached IRC (the work that follows it: the
backstops settle the streams' copies in a pass half a second after they came)."""
PATH = "path"


@dataclass(frozen=True)
class Hop:
    """One message on the bus: when the tap saw it (seconds from the command's send)."""

    at: float
    subject: str
    reply: str
    head: bytes
    size: int


def label(hop: Hop, prefix: str) -> tuple[str, str]:
    """``(role, what)`` of a message: role :data:`PATH` for the user-visible path."""
    s = hop.subject.removeprefix(prefix + ".")
    copy = hop.reply.startswith("$JS.ACK.")
    if s.startswith("chat.in."):
        if copy:
            return "guarantee", "chat.in, the stream's copy to the router's backstop"
        return PATH, "chat.in: the line, connector -> router (and seen, karma), stored"
    if s.startswith("command.run."):
        return PATH, "command.run: router -> echo, a request"
    if s.startswith("chat.out."):
        if copy:
            return "guarantee", "chat.out, the stream's copy to the connector's backstop"
        return PATH, "chat.out: the reply, echo -> connector, stored"
    if s.startswith("$JS.ACK."):
        what = "progress acknowledgement" if hop.head.startswith(b"+WPI") else "acknowledgement"
        return "guarantee", f"{what} of a stream's copy (a backstop's pass)"
    if s.startswith("_INBOX.") and hop.head == b"taken":
        return "guarantee", "taken: router -> connector, the journal's line is done"
    if s.startswith("_INBOX.") and hop.head.startswith(b'{"stream"'):
        return "guarantee", "stream receipt to the publisher"
    if s.startswith("_INBOX."):
        return "result", "command result, echo -> router"
    if s.startswith("$KV."):
        return "other", "a key-value write (seen: who spoke last)"
    if s.startswith("log."):
        return "other", "a log event"
    return "other", s


async def tap(system: System, port: int, bot: Running) -> tuple[list[Hop], str]:
    """One ``!echo`` through eeveepy's ``bot`` with every bus message recorded; (hops, prefix)."""
    state = json.loads(system.state_file.read_text(encoding="utf-8"))
    prefix = state.get("prefix") or "eevee"
    nc = await nats.connect(
        state["url"], user=state.get("user"), password=state.get("password"), name="bench-tap"
    )
    return await tap_bus(nc, prefix, port, bot)


async def tap_bus(nc: Client, prefix: str, port: int, bot: Running) -> tuple[list[Hop], str]:
    """One ``!echo`` through ``bot`` with every message on ``nc``'s bus recorded (``nc`` is
    closed after); (hops, prefix)."""
    seen: list[tuple[float, Msg]] = []

    async def record(msg: Msg) -> None:
        seen.append((time.perf_counter(), msg))

    client = await IrcClient.connect(port, "tapper")
    try:
        await client.join(bot.channel)
        await nc.subscribe(">", cb=record)
        await nc.flush()
        await asyncio.sleep(0.5)
        seen.clear()
        t0 = time.perf_counter()
        await round_trip(client, bot.nick, bot.channel, "hop", 5.0)
        await asyncio.sleep(SETTLE)
    finally:
        await client.close()
        with contextlib.suppress(Exception):
            await nc.close()
    periodic = {m.reply for _, m in seen if _periodic(m.subject)}
    return [
        Hop(t - t0, m.subject, m.reply, m.data[:16], len(m.data))
        for t, m in seen
        if not _periodic(m.subject) and m.subject not in periodic
    ], prefix


def _periodic(subject: str) -> bool:
    """Work on its own clock, not the command's: health pings, the log history's fetches (the
    logging operator's pull consumer asking for more) and the supervisor's lease renewals."""
    return (
        ".operator.ping." in subject
        or subject.startswith("$JS.API.CONSUMER.MSG.NEXT.")
        or (subject.startswith("$KV.") and "_leases." in subject)
    )


def describe(result: tuple[list[Hop], str]) -> str:
    """The hops as lines of text for the benchmark's output."""
    hops, prefix = result
    labels = [label(h, prefix) for h in hops]
    path = [what.split(":")[0] for role, what in labels if role == PATH]
    lines = [
        f"  bus hops of one !echo round trip: {len(path)} on the user-visible path"
        f" ({' -> '.join(path)}), {len(hops)} bus messages in all:"
    ]
    for h, (role, what) in zip(hops, labels, strict=True):
        lines.append(f"    {h.at * 1000:7.2f} ms {h.size:5d} B  {role:<9}  {what}")
    return "\n".join(lines)
