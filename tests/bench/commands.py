"""Command round trip on the bus alone: a console-style chat message in, the reply out.

Router and echo replicas run as real operator processes on an embedded nats-server; this
process plays the connector, publishing ``!echo N`` on ``chat.in`` and waiting for the
``chat.out`` reply that carries its trace.

Each figure is measured twice in one run: with chat input stored (the ``EEVEE_CHAT_IN``
stream, stored publishes, the router's durable consumer: what ``eevee up`` runs) and plain
(no stream: at-most-once core NATS, the same-run baseline), so the cost of the delivery
guarantee is a ratio measured on the same machine in the same hour.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from eeveepy.bus.client import BusConfig, barrier, connect
from eeveepy.bus.ipc import Ipc
from eeveepy.bus.natsserver import EmbeddedNats
from eeveepy.bus.streams import ensure_chat_in_stream
from eeveepy.protocol.models import ChatMessage, ChatUser, Envelope, OutgoingMessage, Ready
from eeveepy.protocol.subjects import Subjects
from tests.operator_procs import spawn_operator, stop_all

PREFIX = "bench"
NETWORK = "local"
ROOM = "#bench"


async def _run(
    url: str, tmp: Path, replicas: int, sequential: int, burst: int, stored: bool
) -> dict[str, Any]:
    nc = await connect(BusConfig(url=url), name="bench-connector")
    if stored:
        await ensure_chat_in_stream(nc.jetstream(), PREFIX)
    subjects = Subjects(PREFIX)
    ipc = Ipc(subjects, "console")
    ready: set[str] = set()
    waiting: dict[str, asyncio.Future[float]] = {}

    async def on_ready(msg: Ready) -> None:
        ready.add(msg.operator)

    async def on_out(env: Envelope[OutgoingMessage]) -> None:
        fut = waiting.pop(env.headers.get("trace", ""), None)
        if fut is not None and not fut.done():
            fut.set_result(time.perf_counter())

    ipc.subscribe(subjects.pattern("operator.ready.>"), on_ready)
    ipc.subscribe(subjects.chat_out("console", NETWORK), on_out)
    await ipc.attach(nc)
    await barrier(nc)
    ids = ["router"] + [f"echo.r{i}" for i in range(replicas)]
    contract = {"url": url, "prefix": PREFIX, "tmp": tmp, "settings": {}}
    procs = [spawn_operator("operators.router", op_id="router", **contract)]
    procs += [spawn_operator("operators.echo", op_id=i, **contract) for i in ids[1:]]
    user = ChatUser(id="bench", name="bench")
    inbound = subjects.chat_in("console", NETWORK, ROOM)

    async def command(n: int) -> asyncio.Future[float]:
        msg = ChatMessage(
            platform="console", network=NETWORK, room=ROOM, user=user, text=f"!echo {n}"
        )
        msg_id, payload = ipc.encode(msg)
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        waiting[msg_id] = fut
        if stored:
            await ipc.store_raw(inbound, payload, msg_id)
        else:
            await ipc.publish_raw(inbound, payload)
        return fut

    try:
        deadline = time.monotonic() + 30
        while set(ids) - ready:
            if time.monotonic() > deadline:
                raise TimeoutError(f"operators not ready: {sorted(set(ids) - ready)}")
            await asyncio.sleep(0.05)
        # Until every replica's registration reached the router, the first commands may fail.
        for n in range(200):
            try:
                await asyncio.wait_for(await command(-n), 1)
                break
            except TimeoutError:
                continue
        for n in range(200):  # warm-up
            await asyncio.wait_for(await command(n), 5)
        samples = []
        for n in range(sequential):
            t0 = time.perf_counter()
            done = await asyncio.wait_for(await command(n), 5)
            samples.append((done - t0) * 1e6)
        samples.sort()
        t0 = time.perf_counter()
        window = asyncio.Semaphore(200)  # the router's max_in_flight is 256
        futs = []

        async def one(n: int) -> None:
            async with window:
                await asyncio.wait_for(await command(n), 30)

        futs = [asyncio.ensure_future(one(n)) for n in range(burst)]
        results = await asyncio.gather(*futs, return_exceptions=True)
        elapsed = time.perf_counter() - t0
        missing = sum(1 for r in results if isinstance(r, BaseException))
        return {
            "replicas": replicas,
            "p50_us": statistics.median(samples),
            "p99_us": samples[int(len(samples) * 0.99) - 1],
            "commands_per_s": (burst - missing) / elapsed,
            "missing": missing,
        }
    finally:
        stop_all(procs)
        await nc.close()


def run(
    replicas: int, sequential: int = 2000, burst: int = 5000, *, stored: bool = True
) -> dict[str, Any]:
    """One measurement with a fresh server and fresh operators."""

    async def go() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            server = EmbeddedNats(store_dir=Path(tmp) / "nats")
            await server.start()
            try:
                return await _run(server.url, Path(tmp), replicas, sequential, burst, stored)
            finally:
                await server.stop()

    return asyncio.run(go())


def main() -> None:
    for replicas in (1, 4):
        plain = run(replicas, stored=False)
        r = run(replicas)
        print(
            f"  {replicas} echo replica(s), stored: round trip p50 {r['p50_us'] / 1000:.2f} ms,"
            f" p99 {r['p99_us'] / 1000:.2f} ms (targets 1 / 2 ms);"
            f" burst {r['commands_per_s']:,.0f} commands/s, {r['missing']} replies missing"
            " (target >= 5,000/s with 4 replicas)"
        )
        print(
            f"    vs plain (no stream, same run): p50 x{r['p50_us'] / plain['p50_us']:.2f},"
            f" p99 x{r['p99_us'] / plain['p99_us']:.2f},"
            f" burst x{r['commands_per_s'] / plain['commands_per_s']:.2f}"
            f" (plain: p50 {plain['p50_us'] / 1000:.2f} ms, p99 {plain['p99_us'] / 1000:.2f} ms,"
            f" {plain['commands_per_s']:,.0f}/s)"
        )


if __name__ == "__main__":
    main()
