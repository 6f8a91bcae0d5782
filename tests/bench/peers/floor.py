"""The floor of eeveepy's architecture: three raw nats-py relays and nothing else.

The same path as eeveepy's `!echo` (connector -> router -> echo -> connector, each a process
of its own, one nats-server between them) with none of eeveepy's work: no envelopes, no
validation, no streams, no permissions, no health pings, no other operators. Whatever this
bot's figures are, no implementation of the architecture can beat them on the same machine in
the same run; the gap between it and eeveepy is eeveepy's own cost, the gap between it and a
single-process peer is the architecture's.

Run as ``python -m tests.bench.peers.floor ROLE NATS_URL [IRC_PORT CHANNEL NICK]`` (ROLE:
``connector``, ``router`` or ``echo``); :func:`floor` starts the whole bot.
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

from eeveepy.aio import loop_factory, run
from eeveepy.bus.natsconf import find_nats_server
from tests.irc_servers import free_port, port_open
from tests.operator_procs import stop_all
from tests.supervisor_fixtures import ROOT

from .bots import Running, output, process

__all__ = ["floor"]

_IN, _RUN, _OUT = "floor.in", "floor.run", "floor.out"


async def _relay(url: str, take: str, give: str, transform: bool) -> None:
    nc = await nats.connect(url)

    async def on(msg: nats.aio.msg.Msg) -> None:
        data = msg.data
        if transform:  # echo: the text after "!echo "
            channel, _, text = data.partition(b"\0")
            data = channel + b"\0" + text[6:]
        await nc.publish(give, data)

    await nc.subscribe(take, cb=on)
    await asyncio.Event().wait()


async def _connector(url: str, port: int, channel: str, nick: str) -> None:
    nc = await nats.connect(url)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode())

    async def out(msg: nats.aio.msg.Msg) -> None:
        target, _, text = msg.data.partition(b"\0")
        writer.write(b"PRIVMSG " + target + b" :" + text + b"\r\n")

    await nc.subscribe(_OUT, cb=out)
    while line := await reader.readline():
        parts = line.rstrip(b"\r\n").split(b" ", 3)
        if parts[0] == b"PING":
            writer.write(b"PONG " + line[5:])
        elif len(parts) > 1 and parts[1] == b"001":
            writer.write(f"JOIN {channel}\r\n".encode())
        elif len(parts) == 4 and parts[1] == b"PRIVMSG" and parts[3].startswith(b":!echo "):
            await nc.publish(_IN, parts[2] + b"\0" + parts[3][1:])


def main(argv: list[str]) -> None:  # pragma: no cover - a benchmark process
    """One relay of the floor bot."""
    role, url = argv[0], argv[1]
    if role == "connector":
        job = _connector(url, int(argv[2]), argv[3], argv[4])
    else:
        job = _relay(url, *((_IN, _RUN) if role == "router" else (_RUN, _OUT)), role == "echo")
    run(job, loop_factory())  # uvloop where eeveepy's operators use it


@contextlib.contextmanager
def floor(port: int, channel: str, workdir: Path) -> Iterator[Running]:
    """The floor bot (a nats-server of its own and three relays) in ``channel``, nick
    ``floor``; stopped, every process, on exit."""
    nats_port = free_port()
    server = [str(find_nats_server()), "-a", "127.0.0.1", "-p", str(nats_port)]
    url = f"nats://127.0.0.1:{nats_port}"
    me = [sys.executable, "-m", "tests.bench.peers.floor"]
    with contextlib.ExitStack() as stack:
        procs = [stack.enter_context(process(server, workdir, "floor-nats"))]
        deadline = time.monotonic() + 10
        while not port_open(nats_port):
            if procs[0].poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"the floor's nats-server did not start: {output(workdir, 'floor-nats')}"
                )
            time.sleep(0.02)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for role in ("router", "echo"):
            procs.append(
                stack.enter_context(process([*me, role, url], workdir, f"floor-{role}", env))
            )
        connector = [*me, "connector", url, str(port), channel, "floor"]
        procs.append(stack.enter_context(process(connector, workdir, "floor-connector", env)))
        try:
            yield Running(
                "floor (3 raw nats-py relays)",
                "floor",
                channel,
                [psutil.Process(p.pid) for p in procs],
            )
        finally:
            stop_all(procs, timeout=5)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
