"""The bus hops of one eeveepy command round trip, as seen by a tap on the bus.

A client with the CLI's credentials (from the supervisor's state file) subscribes to every
subject while one ``!echo`` goes through the system, idle otherwise; each message published
from the IRC command's arrival until a little after its answer is listed, with who sent it to
whom and why. Health pings and their answers, which come on their own clock, are left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass

import nats
from nats.aio.msg import Msg

from tests.bench.ircload import round_trip
from tests.irc_servers import IrcClient
from tests.supervisor_fixtures import System

from .bots import Running

__all__ = ["Hop", "describe", "label", "tap"]

SETTLE = 0.3
"""Seconds the tap keeps listening after the answer reached IRC (the work that follows it)."""


@dataclass(frozen=True)
class Hop:
    """One message on the bus: when (seconds from the command's send), where, how big."""

    at: float
    subject: str
    reply: str
    size: int
    before_answer: bool
    """Published before the answer reached the IRC user (on the user-visible path or beside it)."""


def label(hop: Hop, prefix: str) -> str:
    """What a message is, in the words of docs/benchmarks.md."""
    s = hop.subject.removeprefix(prefix + ".")
    if s.startswith("chat.in."):
        return "chat.in: connector -> router (the line; stored in the chat input stream)"
    if s.startswith("command.run."):
        return "command.run: router -> echo (the invocation, a request)"
    if s.startswith("chat.out."):
        return "chat.out: echo -> connector (the reply; stored in the chat output stream)"
    if s.startswith("log."):
        return "log: a log event"
    if s.startswith("$JS.ACK."):
        return "$JS.ACK: a backstop acknowledges a stored copy"
    if s.startswith("$JS.API."):
        return "$JS.API: a JetStream API request"
    if s.startswith("_INBOX.") or s.startswith("_i."):
        return "reply to an inbox (a request's answer: command result or stream receipt)"
    return s


async def tap(system: System, port: int, bot: Running) -> tuple[list[Hop], str]:
    """One ``!echo`` through ``bot`` with every bus message recorded; (hops, prefix)."""
    state = json.loads(system.state_file.read_text(encoding="utf-8"))
    prefix = state.get("prefix") or "eevee"
    nc = await nats.connect(
        state["url"], user=state.get("user"), password=state.get("password"), name="bench-tap"
    )
    seen: list[tuple[float, str, str, int]] = []
    pings: set[str] = set()

    async def record(msg: Msg) -> None:
        if ".operator.ping." in msg.subject:
            pings.add(msg.reply)
        seen.append((time.perf_counter(), msg.subject, msg.reply, len(msg.data)))

    client = await IrcClient.connect(port, "tapper")
    try:
        await client.join(bot.channel)
        await nc.subscribe(">", cb=record)
        await nc.flush()
        await asyncio.sleep(0.5)
        seen.clear()
        t0 = time.perf_counter()
        took = await round_trip(client, bot.nick, bot.channel, "hop", 5.0)
        await asyncio.sleep(SETTLE)
    finally:
        await client.close()
        with contextlib.suppress(Exception):
            await nc.close()
    hops = [
        Hop(t - t0, subject, reply, size, t - t0 <= took)
        for t, subject, reply, size in seen
        if subject not in pings and ".operator.ping." not in subject and t >= t0
    ]
    return hops, prefix


def describe(result: tuple[list[Hop], str]) -> str:
    """The hops as lines of text for the benchmark's output."""
    hops, prefix = result
    before = [h for h in hops if h.before_answer]
    lines = [
        f"  bus messages of one !echo round trip: {len(before)} before the answer reached IRC,"
        f" {len(hops) - len(before)} more within {SETTLE} s after it:"
    ]
    for h in hops:
        mark = " " if h.before_answer else "+"
        subject = h.subject.removeprefix(prefix + ".")
        subject = subject if len(subject) <= 40 else subject[:37] + "..."
        lines.append(
            f"  {mark} {h.at * 1000:7.2f} ms {h.size:5d} B  {subject:<40}  {label(h, prefix)}"
        )
    return "\n".join(lines)
