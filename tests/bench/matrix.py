"""Command round trip through a real Matrix homeserver, against a plain echo loop.

A Synapse on loopback (SQLite), an embedded nats-server, and router, echo and
``operators.matrix`` as real operator processes (egress flood control off). This process is
the Matrix user: it sends ``!echo N`` in a room and waits for the bot's ``N``.

The same-run baseline is a plain client-server-API echo loop: one matrix-nio client in a
process of its own that syncs and answers ``!echo N`` with ``N`` itself (no bus, no
router). Both are measured with the same user, homeserver and method; the burst is sent all
at once (the homeserver orders it) and "in order" compares the answers with the commands'
order in the room. The figure to watch is the ratio.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from eeveepy.bus.natsserver import EmbeddedNats
from eeveepy.bus.streams import ensure_chat_streams
from tests.matrix_server import MatrixUser, Registered, Synapse, SynapseUnavailable, need_synapse
from tests.operator_procs import spawn_operator, stop_all

PREFIX = "bench"


async def _echo(user: MatrixUser, bot: str, room: str, text: str, timeout: float) -> float:
    """Send ``!echo text``; the time the bot's ``text`` arrived."""
    mark = user.mark()
    await user.send(room, f"!echo {text}")
    await user.wait(
        lambda s: s.sender == bot and s.room == room and s.body == text,
        since=mark,
        timeout=timeout,
    )
    return time.perf_counter()


async def _measure(
    user: MatrixUser, bot: str, room: str, sequential: int, burst: int
) -> dict[str, Any]:
    for n in range(100):  # until the bot answers (the eevee one registers echo first)
        try:
            await _echo(user, bot, room, f"w{n}", 1.0)
            break
        except AssertionError:
            continue
    for n in range(20):  # warm-up
        await _echo(user, bot, room, f"w{n}", 10)
    samples = []
    for n in range(sequential):
        t0 = time.perf_counter()
        samples.append((await _echo(user, bot, room, str(n), 10) - t0) * 1e3)
    samples.sort()
    await asyncio.sleep(0.5)
    mark = user.mark()
    texts = [f"b{n}" for n in range(burst)]
    t0 = time.perf_counter()
    # All at once: the homeserver orders them; "in order" compares the answers with the
    # commands' order in the room's timeline.
    await asyncio.gather(*(user.send(room, f"!echo {text}") for text in texts))
    want = set(texts)
    got: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = [b for m in user.messages(bot, room, since=mark) if (b := m.body) in want]
        if len(got) >= burst:
            break
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - t0
    sent = [m.body or "" for m in user.messages(user.user_id, room, since=mark)]
    order = [b.removeprefix("!echo ") for b in sent if b.removeprefix("!echo ") in want]
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": samples[int(len(samples) * 0.99) - 1],
        "commands_per_s": len(got) / elapsed,
        "missing": burst - len(set(got)),
        "in_order": got == order,
    }


async def plain_bot(url: str, user_id: str, device_id: str, token: str, room: str) -> None:
    """The baseline: a bare client-server-API echo loop (matrix-nio, no bus), run as a
    process of its own like the connector (``python -m tests.bench.matrix plain``)."""
    from nio import AsyncClient, RoomMessageText

    client = AsyncClient(url, user_id)
    client.restore_login(user_id, device_id, token)
    flt = {"room": {"timeline": {"limit": 500}}, "presence": {"types": []}}
    await client.join(room)
    await client.sync(timeout=0, sync_filter=flt)

    async def on_text(r: Any, event: RoomMessageText) -> None:
        if event.sender != user_id and event.body.startswith("!echo "):
            content = {"msgtype": "m.text", "body": event.body.removeprefix("!echo ")}
            await client.room_send(r.room_id, "m.room.message", content)

    client.add_event_callback(on_text, RoomMessageText)  # type: ignore[arg-type]
    try:
        await client.sync_forever(timeout=30000, sync_filter=flt)
    finally:
        await client.close()


def _spawn_plain(server: Synapse, reg: Registered, room: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BENCH_MATRIX": json.dumps([server.url, reg.user_id, reg.device_id,
                                                      reg.access_token, room])}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "tests.bench.matrix", "plain"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _run(server: Synapse, url: str, tmp: Path, sequential: int, burst: int) -> Any:
    plain_reg, bot_reg, user_reg = server.register(), server.register(), server.register()
    user = await MatrixUser.login(server, user_reg, tmp / "user")
    plain_room = await user.create_room(invite=[plain_reg.user_id])
    eevee_room = await user.create_room(invite=[bot_reg.user_id])
    settings = {
        "homeserver": server.url,
        "user_id": bot_reg.user_id,
        "password": bot_reg.password,
        "rooms": [eevee_room],
        "egress_messages": 0,
    }
    procs = [
        spawn_operator(module, url=url, prefix=PREFIX, op_id=op_id, tmp=tmp, settings=conf)
        for module, op_id, conf in (
            ("operators.router", "router", {}),
            ("operators.echo", "echo", {}),
            ("operators.matrix", "matrix.bench", settings),
        )
    ]
    procs.append(_spawn_plain(server, plain_reg, plain_room))
    try:
        base = await _measure(user, plain_reg.user_id, plain_room, sequential, burst)
        eevee = await _measure(user, bot_reg.user_id, eevee_room, sequential, burst)
        return base, eevee
    finally:
        stop_all(procs)
        await user.close()


def run(sequential: int = 300, burst: int = 100) -> tuple[dict[str, Any], dict[str, Any]]:
    """One measurement (plain loop, then eevee) with a fresh Synapse and nats-server."""

    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        with tempfile.TemporaryDirectory() as tmp:
            server = Synapse(Path(tmp) / "synapse")
            server.start()
            nats = EmbeddedNats(store_dir=Path(tmp) / "nats")
            await nats.start()
            try:
                from eeveepy.bus.client import BusConfig, connect

                nc = await connect(BusConfig(url=nats.url), name="bench-streams")
                await ensure_chat_streams(nc.jetstream(), PREFIX)  # as under `eevee up`
                await nc.close()
                result: tuple[dict[str, Any], dict[str, Any]] = await _run(
                    server, nats.url, Path(tmp), sequential, burst
                )
                return result
            finally:
                await nats.stop()
                server.stop()

    return asyncio.run(go())


def main() -> None:
    try:
        need_synapse()
    except SynapseUnavailable as e:
        print(f"  skipped: {e}")
        return
    base, eevee = run()
    for name, r in (("plain C-S API echo loop", base), ("eevee via Synapse", eevee)):
        print(
            f"  {name}: round trip p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms;"
            f" burst of 100: {r['commands_per_s']:.1f} commands/s, {r['missing']} missing,"
            f" {'in order' if r['in_order'] else 'OUT OF ORDER'}"
        )
    print(
        f"  eevee / plain: p50 x{eevee['p50_ms'] / base['p50_ms']:.2f},"
        f" p99 x{eevee['p99_ms'] / base['p99_ms']:.2f},"
        f" burst throughput x{eevee['commands_per_s'] / max(base['commands_per_s'], 1e-9):.2f}"
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["plain"]:
        asyncio.run(plain_bot(*json.loads(os.environ["BENCH_MATRIX"])))
    else:
        main()
