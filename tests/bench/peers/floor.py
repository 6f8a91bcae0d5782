"""The floor of eeveepy's architecture, in tiers: three relays and nothing else, then one
required part of eeveepy's design added at a time.

The same path as eeveepy's `!echo` (connector -> router -> echo -> connector, each a process
of its own, one nats-server between them). Tier ``floor`` does none of eeveepy's work: no
envelopes, no validation, no streams, no permissions, no health pings, no other operators.
Whatever its figures are, no implementation of the architecture can beat them on the same
machine in the same run; the gap between it and eeveepy is eeveepy's own cost, the gap between
it and a single-process peer is the architecture's. The tiers above it
(:data:`~tests.bench.peers.relays.TIERS`) add eeveepy's envelopes, then its delivery guarantee
through JetStream streams, then the command result: the gap between eeveepy and the tier with
the same parts is eeveepy's own code. The relays are in :mod:`tests.bench.peers.relays`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import psutil

from eeveepy.bus.natsconf import find_nats_server
from eeveepy.bus.streams import ensure_chat_out_stream, ensure_chat_streams
from tests.irc_servers import free_port, port_open
from tests.operator_procs import stop_all
from tests.supervisor_fixtures import ROOT

from .bots import Running, output, process
from .relays import TIERS, Tier
from .tiers import PREFIX

__all__ = ["FloorBot", "floor"]

FLOOR = TIERS["floor"]


class FloorBot(Running):
    """A running tier of the floor, and the URL of its nats-server."""

    def __init__(self, tier: Tier, url: str, roots: list[psutil.Process]) -> None:
        name = "floor (3 raw nats-py relays)" if tier is FLOOR else tier.name
        super().__init__(name, tier.nick, f"#{tier.nick}", roots)
        self.tier, self.url = tier, url


async def _streams(url: str, tier: Tier) -> None:
    """The chat streams of the floor's prefix, configured as eeveepy's (the journal tier: the
    output's alone, else its stream would store every plain publish of a line too)."""
    nc = await nats.connect(url)
    try:
        if tier.journal:
            await ensure_chat_out_stream(nc.jetstream(), PREFIX)
        else:
            await ensure_chat_streams(nc.jetstream(), PREFIX)
    finally:
        await nc.close()


@contextlib.contextmanager
def floor(port: int, workdir: Path, tier: Tier = FLOOR) -> Iterator[FloorBot]:
    """The bot of ``tier`` (a nats-server of its own and three relays) in the channel
    ``#<nick>``; stopped, every process, on exit."""
    nats_port, nick = free_port(), tier.nick
    server = [str(find_nats_server()), "-a", "127.0.0.1", "-p", str(nats_port)]
    if tier.streams:
        server += ["-js", "-sd", str(workdir / f"{nick}-jetstream")]
    url = f"nats://127.0.0.1:{nats_port}"
    me = [sys.executable, "-m", "tests.bench.peers.relays", tier.name]
    with contextlib.ExitStack() as stack:
        procs = [stack.enter_context(process(server, workdir, f"{nick}-nats"))]
        deadline = time.monotonic() + 10
        while not port_open(nats_port):
            if procs[0].poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{nick}'s nats-server did not start: {output(workdir, f'{nick}-nats')}"
                )
            time.sleep(0.02)
        if tier.streams:
            asyncio.run(asyncio.wait_for(_streams(url, tier), 10))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for role in ("router", "echo"):
            procs.append(
                stack.enter_context(process([*me, role, url], workdir, f"{nick}-{role}", env))
            )
        connector = [*me, "connector", url, str(port), f"#{nick}", nick]
        procs.append(stack.enter_context(process(connector, workdir, f"{nick}-connector", env)))
        try:
            yield FloorBot(tier, url, [psutil.Process(p.pid) for p in procs])
        finally:
            stop_all(procs, timeout=5)
