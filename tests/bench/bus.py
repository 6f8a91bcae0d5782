"""Bus benchmark: raw nats-py against eeveepy envelopes, publisher and subscriber in two processes.

Run with ``make bench`` (or ``python -m tests.bench.bus``). Not a test: it prints figures.
``--base DIR`` also runs the envelope path of another checkout (its ``eeveepy``, this
harness) in each round, so a change's worth is a ratio of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import structlog
from nats.aio.client import Client as NatsClient

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


async def _connect(url: str, mode: str, name: str) -> NatsClient:
    """A connection for ``mode``: nats-py's own client for "raw" (the baseline is nats-py as
    it comes, not eeveepy's client with its own parser and publishing), eeveepy's otherwise."""
    if mode == "raw":
        nc = NatsClient()
        await nc.connect(servers=[url], name=name)
        return nc
    return await connect(BusConfig(url=url), name=name)


async def _subscriber(url: str, mode: str, count: int) -> None:
    nc = await _connect(url, mode, f"bench-sub-{mode}")
    subjects = Subjects()
    subject = subjects.chat_in("irc", "libera", SUBJECT_ROOM)
    done = asyncio.Event()
    received = 0
    first = first_cpu = 0.0

    def tick() -> None:
        nonlocal received, first, first_cpu
        if received == 0:
            first, first_cpu = time.perf_counter(), time.process_time()
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
    cpu = time.process_time() - first_cpu
    print(json.dumps({"received": received, "elapsed": elapsed, "cpu": cpu}), flush=True)
    await nc.close()


async def _publisher(url: str, mode: str, count: int) -> None:
    nc = await _connect(url, mode, f"bench-pub-{mode}")
    subjects = Subjects()
    subject = subjects.chat_in("irc", "libera", SUBJECT_ROOM)
    ipc = Ipc(subjects, "bench.pub")
    if mode != "raw":
        await ipc.attach(nc)
    body = _message()
    cpu = time.process_time()
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
    cpu = time.process_time() - cpu
    await nc.drain()
    print(json.dumps({"cpu": cpu}), flush=True)


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


def _worker(tree: Path | None, *args: str) -> tuple[list[str], dict[str, str] | None]:
    """The command line (and environment) of a worker of this harness running the eeveepy of
    ``tree`` (this checkout's when None)."""
    if tree is None:
        return [sys.executable, "-m", "tests.bench.bus", *args], None
    # This file, run with only ``tree`` on the path before the installed packages.
    code = (
        "import runpy, sys; sys.argv.pop(0); sys.path[:0] = [sys.argv.pop(0)]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return [sys.executable, "-c", code, str(tree), __file__, *args], env


def _spawn(*args: str, tree: Path | None = None) -> subprocess.Popen[str]:
    argv, env = _worker(tree, *args)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise RuntimeError(f"worker {args} did not start: {line!r}")
    return proc


class Throughput(NamedTuple):
    """One publisher-to-subscriber run: messages delivered per second, and each process's CPU
    time per message in microseconds (the subscriber's from its first message on)."""

    per_s: float
    sub_us: float
    pub_us: float


def throughput(url: str, mode: str, count: int, tree: Path | None = None) -> Throughput:
    """A publisher process sending ``count`` messages to a subscriber process (both running
    the eeveepy of ``tree``, this checkout's when None)."""
    sub = _spawn("sub", url, mode, str(count), tree=tree)
    try:
        argv, env = _worker(tree, "pub", url, mode, str(count))
        out = subprocess.run(argv, check=True, timeout=180, env=env, stdout=subprocess.PIPE)
        pub = json.loads(out.stdout.splitlines()[-1])
        assert sub.stdout is not None
        result = json.loads(sub.stdout.readline())
        sub.wait(timeout=30)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    if result["received"] != count:
        print(f"  warning: {mode} subscriber got {result['received']} of {count}")
    got = result["received"]
    return Throughput(got / result["elapsed"], result["cpu"] / got * 1e6, pub["cpu"] / count * 1e6)


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
    subscriber side of each path costs per message; the process's CPU time, not the wall
    clock's, so that other work on the machine counts less.
    """
    from eeveepy.bus.natsadapter import EeveeClient

    nc = NatsClient() if mode == "raw" else EeveeClient()
    parser = nc._ps  # (the client's own: eeveepy's has its own parser)

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
    t0 = time.process_time()
    for _ in range(count // 500):
        await parser.parse(chunk)
        await asyncio.sleep(0)
    await done.wait()
    return (time.process_time() - t0) / count * 1e6


def parse_cost(mode: str, count: int = 200_000, tree: Path | None = None) -> float:
    """See :func:`_parse_cost`: the least of three runs, in a worker running the eeveepy of
    ``tree`` (this checkout's when None)."""
    argv, env = _worker(tree, "cost", mode, str(count))
    out = subprocess.run(argv, check=True, timeout=300, env=env, stdout=subprocess.PIPE, text=True)
    return float(json.loads(out.stdout.splitlines()[-1]))


def run(count: int, rounds: int, base: Path | None = None) -> dict[str, Any]:
    """Run the bus benchmark against a fresh embedded server; returns the figures. With
    ``base``, each round also measures the envelope path of that checkout."""

    async def start(store: Path) -> EmbeddedNats:
        server = EmbeddedNats(store_dir=store, jetstream=False)
        await server.start()
        return server

    raw: list[Throughput] = []
    env: list[Throughput] = []
    env_base: list[Throughput] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = asyncio.run(start(Path(tmp)))
        try:
            paths: list[tuple[str, list[Throughput], str, Path | None]] = [
                ("raw", raw, "raw", None),
                ("envelope", env, "envelope", None),
            ]
            if base is not None:
                paths.append(("base envelope", env_base, "envelope", base))
            for r in range(rounds):
                # Each round starts with the next path: which one runs first (or after which)
                # moved a path's ratio by as much as 0.15 in runs that kept one order.
                turn = paths[r % len(paths) :] + paths[: r % len(paths)]
                line = f"  round {r + 1}:"
                for name, runs, mode, tree in turn:
                    runs.append(throughput(server.url, mode, count, tree))
                    got = runs[-1]
                    line += (
                        f" {name} {got.per_s:,.0f} msg/s"
                        f" (CPU/msg sub {got.sub_us:.1f} us, pub {got.pub_us:.1f} us)"
                    )
                print(line, flush=True)
            raw_p50, raw_p99 = latency(server.url, "raw", 2000)
            env_p50, env_p99 = latency(server.url, "envelope", 2000)
        finally:
            asyncio.run(server.stop())
    raw_us = parse_cost("raw")
    env_us = parse_cost("envelope")
    figures: dict[str, Any] = {
        "messages": count,
        "rounds": rounds,
        "raw_msgs_per_s": statistics.median(x.per_s for x in raw),
        "envelope_msgs_per_s": statistics.median(x.per_s for x in env),
        # Each round measures raw and envelope back to back; the median of the per-round
        # ratios is steadier than a ratio of medians when the machine is busy.
        "ratio": statistics.median(e.per_s / r.per_s for e, r in zip(env, raw, strict=True)),
        "publisher_ratio": statistics.median(
            r.pub_us / e.pub_us for e, r in zip(env, raw, strict=True)
        ),
        # Steadier than the delivered rate on a shared machine, and what that rate comes to
        # when the processes compete for the cores.
        "cpu_ratio": _cpu_ratio(env, raw),
        "raw_subscriber_us": raw_us,
        "envelope_subscriber_us": env_us,
        "subscriber_ratio": raw_us / env_us,
        "raw_request_p50_us": raw_p50,
        "raw_request_p99_us": raw_p99,
        "envelope_request_p50_us": env_p50,
        "envelope_request_p99_us": env_p99,
    }
    if base is not None:
        base_us = parse_cost("envelope", tree=base)
        figures["base"] = str(base)
        figures["base_ratio"] = statistics.median(
            e.per_s / r.per_s for e, r in zip(env_base, raw, strict=True)
        )
        figures["base_cpu_ratio"] = _cpu_ratio(env_base, raw)
        figures["base_publisher_ratio"] = statistics.median(
            r.pub_us / e.pub_us for e, r in zip(env_base, raw, strict=True)
        )
        figures["base_subscriber_us"] = base_us
        figures["base_subscriber_ratio"] = raw_us / base_us
    return figures


def _cpu_ratio(env: list[Throughput], raw: list[Throughput]) -> float:
    """Median of the rounds' publisher + subscriber CPU per message, raw / envelope."""
    return statistics.median(
        (r.pub_us + r.sub_us) / (e.pub_us + e.sub_us) for e, r in zip(env, raw, strict=True)
    )


def _print(figures: dict[str, Any]) -> None:
    print(f"raw nats-py:        {figures['raw_msgs_per_s']:>10,.0f} msg/s")
    print(f"eeveepy envelopes:  {figures['envelope_msgs_per_s']:>10,.0f} msg/s")
    print(f"ratio:              {figures['ratio']:>10.2f}  (target >= 0.80)")
    print(
        "subscriber CPU per message, no contention:"
        f" raw {figures['raw_subscriber_us']:.2f} us,"
        f" envelope {figures['envelope_subscriber_us']:.2f} us,"
        f" ratio {figures['subscriber_ratio']:.2f}"
    )
    print(f"publisher CPU per message, raw / envelope: {figures['publisher_ratio']:.2f}")
    print(f"publisher + subscriber CPU per message, raw / envelope: {figures['cpu_ratio']:.2f}")
    if "base" in figures:
        print(
            f"base ({figures['base']}): ratio {figures['base_ratio']:.2f},"
            f" subscriber {figures['base_subscriber_us']:.2f} us,"
            f" ratio {figures['base_subscriber_ratio']:.2f},"
            f" publisher ratio {figures['base_publisher_ratio']:.2f},"
            f" publisher + subscriber ratio {figures['base_cpu_ratio']:.2f}"
        )
    print(
        f"request/reply raw:      p50 {figures['raw_request_p50_us']:.0f} us"
        f"  p99 {figures['raw_request_p99_us']:.0f} us"
    )
    print(
        f"request/reply envelope: p50 {figures['envelope_request_p50_us']:.0f} us"
        f"  p99 {figures['envelope_request_p99_us']:.0f} us"
    )


def main(argv: list[str] | None = None) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "role", nargs="?", default="main", choices=["main", "sub", "pub", "resp", "cost"]
    )
    parser.add_argument("args", nargs="*")
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--base", type=Path, help="another checkout whose envelope path runs in each round too"
    )
    parser.add_argument("--json", action="store_true")
    ns = parser.parse_args(argv)
    if ns.role == "sub":
        asyncio.run(_subscriber(ns.args[0], ns.args[1], int(ns.args[2])))
    elif ns.role == "pub":
        asyncio.run(_publisher(ns.args[0], ns.args[1], int(ns.args[2])))
    elif ns.role == "resp":
        asyncio.run(_responder(ns.args[0], ns.args[1]))
    elif ns.role == "cost":
        costs = [asyncio.run(_parse_cost(ns.args[0], int(ns.args[1]))) for _ in range(3)]
        print(json.dumps(min(costs)))
    else:
        figures = run(ns.count, ns.rounds, ns.base.resolve() if ns.base else None)
        if ns.json:
            print(json.dumps(figures))
        else:
            _print(figures)


if __name__ == "__main__":
    main()
