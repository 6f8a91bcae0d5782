"""The processes of the floor's tiers: three relays (connector, router, echo) per tier.

Tier ``floor`` is raw bytes: no envelopes, no validation, no streams. Each tier above adds one
of eeveepy's required parts to the one below (:data:`TIERS`; their relays are in
:mod:`tests.bench.peers.tiers`). This module imports nothing of the harness (no pytest, no
psutil), so each relay's memory is the relay's own.

Run as ``python -m tests.bench.peers.relays TIER ROLE NATS_URL [IRC_PORT CHANNEL NICK]``
(ROLE: ``connector``, ``router`` or ``echo``); :func:`tests.bench.peers.floor.floor` starts
a tier's whole bot.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
from nats.aio.msg import Msg

from eeveepy.aio import loop_factory, run

__all__ = ["STORES_ONLY", "TIERS", "Tier", "echo_lines", "irc", "main"]


@dataclass(frozen=True)
class Tier:
    """One tier of the floor: the parts of eeveepy's design its relays do."""

    name: str
    nick: str
    """Its IRC nick (and, with a ``#``, its channel)."""
    envelopes: bool
    """Every message is eeveepy's envelope, fully validated on receipt."""
    streams: bool
    """The line and the reply are stored publishes, each stream with a backstop consumer."""
    result: bool
    """Echo answers the router's invocation with the command result once its reply is stored."""
    backstops: bool = True
    """With ``streams``: each stream's receiver takes its copies (False: nobody consumes them)."""
    journal: bool = False
    """With ``streams`` and ``result``: the line is no stored publish but kept by the connector
    in a journal (:mod:`tests.bench.peers.journal`), a plain publish the router answers once
    echo's result is in; only the reply goes through a stream."""


TIERS = {
    tier.name: tier
    for tier in (
        Tier("floor", "floor", envelopes=False, streams=False, result=False),
        Tier("floor+envelopes", "floor2", envelopes=True, streams=False, result=False),
        Tier(
            "floor+envelopes+journal+result",
            "floor2j",
            envelopes=True,
            streams=True,
            result=True,
            journal=True,
        ),
        Tier("floor+envelopes+streams", "floor3", envelopes=True, streams=True, result=False),
        Tier("floor+envelopes+streams+result", "floor4", envelopes=True, streams=True, result=True),
    )
}
"""Every tier, each adding one part to the one before; but the journal's, which has the top
tier's parts with another delivery guarantee for chat input (the connector's, not a stream's)."""

STORES_ONLY = Tier(
    "floor+envelopes+stores", "floor3s", envelopes=True, streams=True, result=False, backstops=False
)
"""Not a tier of the design: its streams half, the stored publishes without the backstops
(``--floor-split``), to tell the cost of storing from that of consuming and acknowledging."""

_IN, _RUN, _OUT = "floor.in", "floor.run", "floor.out"


async def _relay(url: str, take: str, give: str, transform: bool) -> None:
    nc = await nats.connect(url)

    async def on(msg: Msg) -> None:
        data = msg.data
        if transform:  # echo: the text after "!echo "
            channel, _, text = data.partition(b"\0")
            data = channel + b"\0" + text[6:]
        await nc.publish(give, data)

    await nc.subscribe(take, cb=on)
    await asyncio.Event().wait()


async def irc(port: int, nick: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the IRC server on ``port``, registering as ``nick``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode())
    return reader, writer


async def echo_lines(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, channel: str
) -> AsyncIterator[list[bytes]]:
    """Each ``!echo`` PRIVMSG the connection reads, split as (prefix, PRIVMSG, target,
    :text), until the server closes it; PINGs are answered and ``channel`` joined on the way."""
    while line := await reader.readline():
        parts = line.rstrip(b"\r\n").split(b" ", 3)
        if parts[0] == b"PING":
            writer.write(b"PONG " + line[5:])
        elif len(parts) > 1 and parts[1] == b"001":
            writer.write(f"JOIN {channel}\r\n".encode())
        elif len(parts) == 4 and parts[1] == b"PRIVMSG" and parts[3].startswith(b":!echo "):
            yield parts


async def _connector(url: str, port: int, channel: str, nick: str) -> None:
    nc = await nats.connect(url)
    reader, writer = await irc(port, nick)

    async def out(msg: Msg) -> None:
        target, _, text = msg.data.partition(b"\0")
        writer.write(b"PRIVMSG " + target + b" :" + text + b"\r\n")

    await nc.subscribe(_OUT, cb=out)
    async for parts in echo_lines(reader, writer, channel):
        await nc.publish(_IN, parts[2] + b"\0" + parts[3][1:])


def main(argv: list[str]) -> None:  # pragma: no cover - a benchmark process
    """One relay of one tier."""
    tier, role, url = {**TIERS, STORES_ONLY.name: STORES_ONLY}[argv[0]], argv[1], argv[2]
    if tier.envelopes:
        from tests.bench.peers import tiers

        job = tiers.job(tier, role, url, argv[3:])
    elif role == "connector":
        job = _connector(url, int(argv[3]), argv[4], argv[5])
    else:
        job = _relay(url, *((_IN, _RUN) if role == "router" else (_RUN, _OUT)), role == "echo")
    run(job, loop_factory())  # uvloop where eeveepy's operators use it


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
