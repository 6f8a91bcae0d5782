"""Command round trip through a real XMPP server, beside a bare slixmpp echo bot in the same run.

A Prosody on loopback with its default network settings (Nagle's algorithm on, as deployed
servers run), an embedded nats-server, and router, echo and ``operators.xmpp`` as real
operator processes (egress flood control off). This process is the user, a slixmpp client in
a room: it sends ``!echo N`` and waits for the bot's ``N``. The baseline is
``tests/bench/xmpp_rawbot.py``, a plugin-less slixmpp bot answering in a room of its own, timed
by the same client in the same run; the figures that matter are the ratios to it.

The user's client asks its kernel for immediate ACKs (``TCP_QUICKACK``) so that it does not
itself hold Prosody's replies behind Nagle: what is measured is the bots' side of the socket.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from eeveepy.bus.natsserver import EmbeddedNats
from tests.bench.servers import run_if_installed
from tests.operator_procs import ROOT, spawn_operator, stop_all
from tests.xmpp_server import MUC, Prosody, XmppClient

PREFIX = "bench"
WARMUP = 50


async def _echo(client: XmppClient, room: str, bot: str, text: str, timeout: float) -> float:
    """Send ``!echo text`` in ``room``; the time ``bot``'s ``text`` arrived."""
    mark = client.mark()
    client.say(room, f"!echo {text}")
    sender = f"{room}/{bot}"
    await client.wait(lambda m: m.sender == sender and m.body == text, since=mark, timeout=timeout)
    return time.perf_counter()


async def _measure(
    client: XmppClient, room: str, bot: str, sequential: int, burst: int
) -> dict[str, Any]:
    for n in range(WARMUP):
        await _echo(client, room, bot, f"w{n}", 5)
    samples = []
    for n in range(sequential):
        t0 = time.perf_counter()
        samples.append((await _echo(client, room, bot, str(n), 5) - t0) * 1e3)
    samples.sort()
    await asyncio.sleep(0.2)
    mark = client.mark()
    texts = [f"b{n}" for n in range(burst)]
    sender = f"{room}/{bot}"
    t0 = time.perf_counter()
    for text in texts:
        client.say(room, f"!echo {text}")
    want = set(texts)
    got: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(got) < burst:
        got = [m.body for m in client.received[mark:] if m.sender == sender and m.body in want]
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - t0
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": samples[int(len(samples) * 0.99) - 1],
        "per_s": len(got) / elapsed,
        "missing": burst - len(set(got)),
        "in_order": got == texts,
    }


async def _until_ready(client: XmppClient, room: str, bot: str) -> None:
    for n in range(300):  # until the bot is in the room and echo is registered
        try:
            await _echo(client, room, bot, f"ready{n}", 0.5)
            return
        except AssertionError:
            continue
    raise AssertionError(f"{bot} never answered in {room}")


async def _run(tmp: Path, sequential: int, burst: int) -> dict[str, dict[str, Any]]:
    server = Prosody(tmp / "prosody")
    server.start()
    nats = EmbeddedNats(store_dir=tmp / "nats")
    await nats.start()
    procs: list[subprocess.Popen[bytes]] = []
    client = await XmppClient.connected(server, "bencher", quickack=True)
    try:
        raw_room, eevee_room = f"raw@{MUC}", f"eevee@{MUC}"
        await client.join(raw_room)
        await client.join(eevee_room)
        raw_jid = server.register("rawbot", "pw")
        rawbot = [sys.executable, "-m", "tests.bench.xmpp_rawbot", raw_jid, "pw"]
        rawbot += [str(server.port), raw_room, "rawbot"]
        procs.append(subprocess.Popen(rawbot, cwd=ROOT, stdout=subprocess.DEVNULL))  # noqa: ASYNC220
        bot_jid = server.register("eeveebot", "pw")
        settings = {
            "jid": bot_jid,
            "password": "pw",
            "host": "127.0.0.1",
            "port": server.port,
            "tls": "plain",  # as the baseline: the cost compared is the bot's, not TLS's
            "nick": "eeveebot",
            "rooms": [eevee_room],
            "egress_messages": 0,
        }
        common = {"url": nats.url, "prefix": PREFIX, "tmp": tmp}
        procs += [
            spawn_operator("operators.router", op_id="router", settings={}, **common),
            spawn_operator("operators.echo", op_id="echo", settings={}, **common),
            spawn_operator("operators.xmpp", op_id="xmpp.bench", settings=settings, **common),
        ]
        await _until_ready(client, raw_room, "rawbot")
        await _until_ready(client, eevee_room, "eeveebot")
        raw = await _measure(client, raw_room, "rawbot", sequential, burst)
        eevee = await _measure(client, eevee_room, "eeveebot", sequential, burst)
        return {"raw": raw, "eevee": eevee}
    finally:
        stop_all(procs)
        await client.close()
        await nats.stop()
        server.stop()


def run(sequential: int = 500, burst: int = 300) -> dict[str, dict[str, Any]]:
    """One measurement with a fresh Prosody, nats-server, baseline bot and operators."""

    async def go() -> dict[str, dict[str, Any]]:
        with tempfile.TemporaryDirectory() as tmp:
            return await _run(Path(tmp), sequential, burst)

    return asyncio.run(go())


def main() -> None:
    r = run_if_installed("prosody", run, "`make chat-servers`")
    if r is None:
        return
    raw, eevee = r["raw"], r["eevee"]
    for name, f in (("bare slixmpp bot (baseline)", raw), ("eeveepy", eevee)):
        print(
            f"  {name}: p50 {f['p50_ms']:.2f} ms, p99 {f['p99_ms']:.2f} ms; burst of 300:"
            f" {f['per_s']:,.0f}/s, {f['missing']} missing,"
            f" {'in order' if f['in_order'] else 'OUT OF ORDER'}"
        )
    print(
        f"  eeveepy / baseline: p50 x{eevee['p50_ms'] / raw['p50_ms']:.2f},"
        f" p99 x{eevee['p99_ms'] / raw['p99_ms']:.2f},"
        f" burst x{eevee['per_s'] / raw['per_s']:.2f}"
    )


if __name__ == "__main__":
    main()
