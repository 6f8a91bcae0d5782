"""Command round trip through a real IRC server: raw client -> ngircd -> connector -> router ->
echo -> connector -> ngircd -> raw client.

An embedded nats-server, an ngircd on loopback, and router, echo and ``operators.irc`` as real
operator processes (egress flood control off: ``egress_lines = 0``). This process is the IRC
user: it sends ``!echo N`` in ``#bench`` and waits for the bot's ``N``.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from eeveepy.bus.natsserver import EmbeddedNats
from tests.bench.ircload import load, ready, sequential
from tests.bench.servers import run_if_installed
from tests.irc_servers import IrcClient, running_ngircd
from tests.operator_procs import spawn_operator, stop_all

PREFIX = "bench"
CHANNEL = "#bench"
BOT = "eevee"


async def _run(
    url: str, irc_port: int, tmp: Path, sequential_count: int, burst: int
) -> dict[str, Any]:
    client = await IrcClient.connect(irc_port, "bencher")
    await client.join(CHANNEL)
    connector = {
        "host": "127.0.0.1",
        "port": irc_port,
        "nick": BOT,
        "channels": [CHANNEL],
        "egress_lines": 0,
    }
    procs = [
        spawn_operator(
            "operators.router", url=url, prefix=PREFIX, op_id="router", tmp=tmp, settings={}
        ),
        spawn_operator(
            "operators.echo", url=url, prefix=PREFIX, op_id="echo", tmp=tmp, settings={}
        ),
        spawn_operator(
            "operators.irc", url=url, prefix=PREFIX, op_id="irc.local", tmp=tmp, settings=connector
        ),
    ]
    try:
        await client.wait(
            lambda m: m.command == "JOIN" and m.nick == BOT, timeout=30
        )  # the connector is on IRC
        await ready(client, BOT, CHANNEL, 30)
        await sequential(client, BOT, CHANNEL, 200)  # warm-up
        r = await load(client, BOT, CHANNEL, count=sequential_count, burst_of=burst)
        return {
            "p50_us": r.p50_us,
            "p99_us": r.p99_us,
            "commands_per_s": r.burst_per_s,
            "missing": r.missing,
            "in_order": r.in_order,
        }
    finally:
        stop_all(procs)
        await client.close()


def run(sequential: int = 1000, burst: int = 300) -> dict[str, Any]:
    """One measurement with a fresh nats-server, ngircd and operators."""

    async def go() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp, running_ngircd() as ircd:
            server = EmbeddedNats(store_dir=Path(tmp) / "nats")
            await server.start()
            try:
                return await _run(server.url, ircd.port, Path(tmp), sequential, burst)
            finally:
                await server.stop()

    return asyncio.run(go())


def main() -> None:
    r = run_if_installed("ngircd", run, "apt-get install ngircd; `make chat-servers`")
    if r is None:
        return
    print(
        f"  irc via ngircd: round trip p50 {r['p50_us'] / 1000:.2f} ms,"
        f" p99 {r['p99_us'] / 1000:.2f} ms (targets 1.5 / 3 ms);"
        f" burst of 300: {r['commands_per_s']:,.0f} commands/s, {r['missing']} replies missing,"
        f" {'in order' if r['in_order'] else 'OUT OF ORDER'} (target >= 3,000/s)"
    )


if __name__ == "__main__":
    main()
