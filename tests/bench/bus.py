"""Bus benchmark: raw nats-py against eeveepy envelopes, publisher and subscriber in two processes.

Run with ``make bench`` (or ``python -m tests.bench.bus``). Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from eeveepy.bus.client import BusConfig, barrier, connect
from eeveepy.bus.ipc import Ipc
from eeveepy.bus.natsserver import EmbeddedNats
from eeveepy.protocol.models import ChatMessage, ChatUser, Ping, Pong
from eeveepy.protocol.subjects import Subjects

PENDING = 1_000_000
SUBJECT_ROOM = "#ops"


def _message() -> ChatMessage:
    return ChatMessage(
        platform="irc",
        network="libera",
        room=SUBJECT_ROOM,
        user=ChatUser(id="alice", name="alice", account="alice"),
        text="!echo hello world",
    )


async def _subscriber(url: str, mode: str, count: int) -> None:
    nc = await connect(BusConfig(url=url), name=f"bench-sub-{mode}")
    subjects = Subjects()
    subject = subjects.chat_in("irc", "libera", SUBJECT_ROOM)
    done = asyncio.Event()
    received = 0
    first = 0.0

    def tick() -> None:
        nonlocal received, first
        if received == 0:
            first = time.perf_counter()
        received += 1
        if received == count:
            done.set()

    if mode == "raw":

        async def raw_cb(msg: Any) -> None:
            tick()

        await nc.subscribe(subject, cb=raw_cb, pending_msgs_limit=PENDING)
    else:
        ipc = Ipc(subjects, "bench.sub", pending_msgs_limit=PENDING)

        async def on_chat(msg: ChatMessage) -> None:
            tick()

        ipc.subscribe(subject, on_chat)
        await ipc.attach(nc)
    await barrier(nc)
    print("ready", flush=True)
    try:
        await asyncio.wait_for(done.wait(), timeout=120)
    except TimeoutError:
        pass
    elapsed = time.perf_counter() - first
    print(json.dumps({"received": received, "elapsed": elapsed}), flush=True)
    await nc.close()


async def _publisher(url: str, mode: str, count: int) -> None:
    nc = await connect(BusConfig(url=url), name=f"bench-pub-{mode}")
    subjects = Subjects()
    subject = subjects.chat_in("irc", "libera", SUBJECT_ROOM)
    ipc = Ipc(subjects, "bench.pub")
    await ipc.attach(nc)
    body = _message()
    if mode == "raw":
        _, payload = ipc.encode(body)
        for i in range(count):
            await nc.publish(subject, payload)
            if i % 1000 == 0:
                await asyncio.sleep(0)
    else:
        for i in range(count):
            await ipc.publish(subject, body)
            if i % 1000 == 0:
                await asyncio.sleep(0)
    await nc.flush()
    await nc.drain()


async def _responder(url: str, mode: str) -> None:
    nc = await connect(BusConfig(url=url), name="bench-responder")
    subjects = Subjects()
    subject = subjects.operator_ping("bench.resp")
    if mode == "raw":

        async def raw_cb(msg: Any) -> None:
            await nc.publish(msg.reply, b"pong")

        await nc.subscribe(subject, cb=raw_cb)
    else:
        ipc = Ipc(subjects, "bench.resp")

        async def on_ping(ping: Ping) -> Pong:
            return Pong(operator="bench.resp", state="running")

        ipc.subscribe(subject, on_ping)
        await ipc.attach(nc)
    await barrier(nc)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await nc.close()


def _spawn(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.bus", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise RuntimeError(f"worker {args} did not start: {line!r}")
    return proc


def throughput(url: str, mode: str, count: int) -> float:
    """Messages/s delivered to a subscriber process from a publisher process."""
    sub = _spawn("sub", url, mode, str(count))
    try:
        pub = subprocess.run(
            [sys.executable, "-m", "tests.bench.bus", "pub", url, mode, str(count)],
            check=True,
            timeout=180,
        )
        del pub
        assert sub.stdout is not None
        result = json.loads(sub.stdout.readline())
        sub.wait(timeout=30)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    if result["received"] != count:
        print(f"  warning: {mode} subscriber got {result['received']} of {count}")
    return float(result["received"] / result["elapsed"])


async def _latency(url: str, mode: str, count: int) -> list[float]:
    nc = await connect(BusConfig(url=url), name="bench-requester")
    subjects = Subjects()
    subject = subjects.operator_ping("bench.resp")
    ipc = Ipc(subjects, "bench.req")
    await ipc.attach(nc)
    samples: list[float] = []
    for i in range(count + 200):
        t0 = time.perf_counter()
        if mode == "raw":
            await nc.request(subject, b"ping", timeout=2)
        else:
            await ipc.request(subject, Ping(), Pong, timeout=2)
        if i >= 200:  # warm-up
            samples.append((time.perf_counter() - t0) * 1e6)
    await nc.close()
    return samples


def latency(url: str, mode: str, count: int) -> tuple[float, float]:
    """Request/reply round trip p50 and p99 in microseconds."""
    resp = _spawn("resp", url, mode)
    try:
        samples = asyncio.run(_latency(url, mode, count))
    finally:
        assert resp.stdin is not None
        resp.stdin.close()
        try:
            resp.wait(timeout=10)
        except subprocess.TimeoutExpired:
            resp.kill()
            resp.wait()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


async def _parse_cost(mode: str, count: int) -> float:
    """Microseconds of subscriber CPU per message, fed straight into the client's parser.

    No publisher and no server compete for the CPU here, so this isolates what the
    subscriber side of each path costs per message.
    """
    from nats.protocol.parser import Parser

    from eeveepy.bus.natsadapter import EeveeClient

    nc = EeveeClient()
    parser = Parser(nc)

    async def no_send(*args: Any, **kwargs: Any) -> None:
        return None

    nc._send_subscribe = no_send  # type: ignore[method-assign]
    nc._status = nc.CONNECTED
    subject = Subjects().chat_in("irc", "libera", SUBJECT_ROOM)
    done = asyncio.Event()
    received = 0

    def tick() -> None:
        nonlocal received
        received += 1
        if received == count:
            done.set()

    if mode == "raw":

        async def raw_cb(msg: Any) -> None:
            tick()

        sid = (await nc.subscribe(subject, cb=raw_cb, pending_msgs_limit=PENDING))._id
    else:
        ipc = Ipc(Subjects(), "bench.sub", pending_msgs_limit=PENDING)

        def on_chat(msg: ChatMessage) -> None:
            tick()

        ipc._nc = nc
        sub = await ipc.subscribe(subject, on_chat)
        assert sub._nats_sub is not None
        sid = sub._nats_sub._id
    _, payload = Ipc(Subjects(), "bench.pub").encode(_message())
    line = b"MSG %s %d %d\r\n%s\r\n" % (subject.encode(), sid, len(payload), payload)
    chunk = line * 500
    t0 = time.perf_counter()
    for _ in range(count // 500):
        await parser.parse(chunk)
        await asyncio.sleep(0)
    await done.wait()
    return (time.perf_counter() - t0) / count * 1e6


def parse_cost(mode: str, count: int = 200_000) -> float:
    """See :func:`_parse_cost`."""
    return asyncio.run(_parse_cost(mode, count))


def run(count: int, rounds: int) -> dict[str, Any]:
    """Run the bus benchmark against a fresh embedded server; returns the figures."""

    async def start(store: Path) -> EmbeddedNats:
        server = EmbeddedNats(store_dir=store, jetstream=False)
        await server.start()
        return server

    with tempfile.TemporaryDirectory() as tmp:
        server = asyncio.run(start(Path(tmp)))
        try:
            raw: list[float] = []
            env: list[float] = []
            for r in range(rounds):
                raw.append(throughput(server.url, "raw", count))
                env.append(throughput(server.url, "envelope", count))
                print(f"  round {r + 1}: raw {raw[-1]:,.0f} msg/s, envelope {env[-1]:,.0f} msg/s")
            raw_p50, raw_p99 = latency(server.url, "raw", 2000)
            env_p50, env_p99 = latency(server.url, "envelope", 2000)
        finally:
            asyncio.run(server.stop())
    raw_med = statistics.median(raw)
    env_med = statistics.median(env)
    raw_us = min(parse_cost("raw") for _ in range(3))
    env_us = min(parse_cost("envelope") for _ in range(3))
    return {
        "messages": count,
        "rounds": rounds,
        "raw_msgs_per_s": raw_med,
        "envelope_msgs_per_s": env_med,
        # Each round measures raw and envelope back to back; the median of the per-round
        # ratios is steadier than a ratio of medians when the machine is busy.
        "ratio": statistics.median(e / r for e, r in zip(env, raw, strict=True)),
        "raw_subscriber_us": raw_us,
        "envelope_subscriber_us": env_us,
        "subscriber_ratio": raw_us / env_us,
        "raw_request_p50_us": raw_p50,
        "raw_request_p99_us": raw_p99,
        "envelope_request_p50_us": env_p50,
        "envelope_request_p99_us": env_p99,
    }


def main(argv: list[str] | None = None) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", nargs="?", default="main", choices=["main", "sub", "pub", "resp"])
    parser.add_argument("args", nargs="*")
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    ns = parser.parse_args(argv)
    if ns.role == "sub":
        asyncio.run(_subscriber(ns.args[0], ns.args[1], int(ns.args[2])))
    elif ns.role == "pub":
        asyncio.run(_publisher(ns.args[0], ns.args[1], int(ns.args[2])))
    elif ns.role == "resp":
        asyncio.run(_responder(ns.args[0], ns.args[1]))
    else:
        figures = run(ns.count, ns.rounds)
        if ns.json:
            print(json.dumps(figures))
        else:
            print(f"raw nats-py:        {figures['raw_msgs_per_s']:>10,.0f} msg/s")
            print(f"eeveepy envelopes:  {figures['envelope_msgs_per_s']:>10,.0f} msg/s")
            print(f"ratio:              {figures['ratio']:>10.2f}  (target >= 0.80)")
            print(
                "subscriber CPU per message, no contention:"
                f" raw {figures['raw_subscriber_us']:.2f} us,"
                f" envelope {figures['envelope_subscriber_us']:.2f} us,"
                f" ratio {figures['subscriber_ratio']:.2f}"
            )
            print(
                f"request/reply raw:      p50 {figures['raw_request_p50_us']:.0f} us"
                f"  p99 {figures['raw_request_p99_us']:.0f} us"
            )
            print(
                f"request/reply envelope: p50 {figures['envelope_request_p50_us']:.0f} us"
                f"  p99 {figures['envelope_request_p99_us']:.0f} us"
            )


if __name__ == "__main__":
    main()
