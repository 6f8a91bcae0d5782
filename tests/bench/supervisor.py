"""Supervisor benchmark: start-up of 50 and 200 operators, restart latency, ping CPU, the time
to recover from kill -9 of the embedded bus, and the memory of the whole default system.

Runs the supervisor in this process (so its own CPU can be measured) with isolated paths; the
memory section runs ``eevee up`` on the default configuration as a user would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from eeveepy.bus.client import BusConfig, connect
from eeveepy.bus.ipc import Ipc
from eeveepy.config import Config, OperatorConfig, PathsConfig, SupervisorConfig
from eeveepy.errors import EeveeError
from eeveepy.protocol.models import Ping, Pong
from eeveepy.protocol.subjects import Subjects
from eeveepy.supervisor.core import Supervisor, read_state
from eeveepy.supervisor.states import ProcessState

MODULE = "tests.operators.null_operator"
ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024
BASELINE = "import nats, sys; sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.read()"
"""The same-run baseline of the memory figures: a bare interpreter that imported nats-py."""


def _config(tmp: Path, count: int, forkserver: bool) -> Config:
    sup = SupervisorConfig(
        forkserver=forkserver,
        start_timeout=60,
        ping_interval=2,
        ping_timeout=2,
        backoff_initial=0.5,
        max_restarts=1000,
        healthy_after=0.5,
        lease_ttl=5,
    )
    ops = {
        f"null{i}": OperatorConfig(
            id=f"null{i}", module=MODULE, start_timeout=60, max_restarts=1000
        )
        for i in range(count)
    }
    paths = PathsConfig(
        state_dir=tmp / "state", log_dir=tmp / "log", cache_dir=tmp / "cache", data_dir=tmp / "data"
    )
    return Config(supervisor=sup, operators=ops, paths=paths)


async def _wait(sup: Supervisor, pred: Any, timeout: float) -> float:
    t0 = time.perf_counter()
    while not pred(sup):
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("benchmark condition not reached")
        await asyncio.sleep(0.005)
    return time.perf_counter() - t0


def _all_running(sup: Supervisor) -> bool:
    return all(p.state == ProcessState.RUNNING for p in sup.operators.values())


async def startup(count: int, forkserver: bool) -> dict[str, Any]:
    """Seconds from Supervisor.start() to every operator RUNNING."""
    with tempfile.TemporaryDirectory() as tmp:
        sup = Supervisor(_config(Path(tmp), count, forkserver), name="bench")
        me = psutil.Process()
        cpu0 = _cpu_by_kind(me)
        t0 = time.perf_counter()
        try:
            await sup.start()
            await _wait(sup, _all_running, 120)
            elapsed = time.perf_counter() - t0
            cpu = _cpu_by_kind(me)
            by_kind = {kind: cpu[kind] - cpu0.get(kind, 0.0) for kind in cpu}
            result: dict[str, Any] = {
                "operators": count,
                "forkserver": forkserver,
                "seconds": elapsed,
                "cpu_seconds": sum(by_kind.values()),
                "cpu_by_kind": by_kind,
            }
            if forkserver:
                result.update(await _steady_state(sup))
            return result
        finally:
            await sup.shutdown()


def _cpu_by_kind(proc: psutil.Process) -> dict[str, float]:
    """CPU seconds (user and system) of ``proc`` (the supervisor) and every live descendant of
    it, summed by kind: supervisor, nats-server, fork server, operators."""
    total: dict[str, float] = {}
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            kind = _kind(p, proc.pid)
            total[kind] = total.get(kind, 0.0) + sum(p.cpu_times()[:2])
    return total


def _kind(proc: psutil.Process, supervisor: int) -> str:
    if proc.pid == supervisor:
        return "supervisor"
    if proc.name() == "nats-server":
        return "nats-server"
    return "fork server" if "fork server" in " ".join(proc.cmdline()) else "operators"


async def _steady_state(sup: Supervisor) -> dict[str, Any]:
    # Memory of the minimal operator.
    rss, uss, pss = [], [], []
    for proc in sup.operators.values():
        if proc.pid is None:
            continue
        try:
            info = psutil.Process(proc.pid).memory_full_info()
        except psutil.Error:
            continue
        rss.append(info.rss)
        uss.append(info.uss)
        pss.append(info.pss)
    # Supervisor CPU while it pings everything (this process is the supervisor).
    me = psutil.Process()
    await asyncio.sleep(2)
    c0 = sum(me.cpu_times()[:2])
    w0 = time.perf_counter()
    await asyncio.sleep(10)
    cpu = (sum(me.cpu_times()[:2]) - c0) / (time.perf_counter() - w0) * 100
    # kill -9 -> RUNNING again.
    restarts = []
    procs = list(sup.operators.values())
    for i in range(20):
        proc = procs[i % len(procs)]
        old = proc.pid
        assert old is not None
        t0 = time.perf_counter()
        os.kill(old, signal.SIGKILL)
        while not (proc.state == ProcessState.RUNNING and proc.pid not in (None, old)):
            if time.perf_counter() - t0 > 30:
                raise TimeoutError("operator not restarted")
            await asyncio.sleep(0.002)
        restarts.append(time.perf_counter() - t0)
        await asyncio.sleep(0.6)  # past healthy_after, so each kill is a first failure
    restarts.sort()
    mb = 1024 * 1024
    return {
        "rss_mb_median": statistics.median(rss) / mb,
        "uss_mb_median": statistics.median(uss) / mb,
        "pss_mb_median": statistics.median(pss) / mb,
        "supervisor_cpu_percent": cpu,
        "restart_p50_s": statistics.median(restarts),
        "restart_max_s": restarts[-1],
    }


async def bus_recovery(rounds: int = 5) -> dict[str, float]:
    """Seconds from kill -9 of the embedded nats-server until an operator answers a request.

    Each round is a fresh supervisor with two operators, so each kill is the bus's first
    death (the restart backoff grows with repeated deaths, as an operator's does). The
    request goes from a client of its own, as a connector's would, on the same URL.
    """
    times = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            sup = Supervisor(_config(Path(tmp), 2, forkserver=True), name="bench")
            try:
                await sup.start()
                await _wait(sup, _all_running, 60)
                times.append(await _kill_bus_and_ask(sup))
            finally:
                await sup.shutdown()
    times.sort()
    return {"p50_s": statistics.median(times), "max_s": times[-1]}


async def _kill_bus_and_ask(sup: Supervisor) -> float:
    state = read_state(sup.paths)
    nc = await connect(
        BusConfig(), name="bench", url=state["url"], user=state["user"], password=state["password"]
    )
    ipc = Ipc(Subjects(state["prefix"]), "bench")
    await ipc.attach(nc)
    subject = ipc.subjects.operator_ping("null0")
    try:
        await ipc.request(subject, Ping(), Pong, timeout=2)
        server = next(p for p in psutil.Process().children() if p.name() == "nats-server")
        t0 = time.perf_counter()
        server.kill()
        while True:
            try:
                await ipc.request(subject, Ping(), Pong, timeout=0.25)
                return time.perf_counter() - t0
            except EeveeError:
                if time.perf_counter() - t0 > 30:
                    raise TimeoutError("no answer 30 s after the bus was killed") from None
                await asyncio.sleep(0.01)
    finally:
        await nc.close()


def _memory(proc: psutil.Process) -> tuple[float, float]:
    """USS and PSS of ``proc`` in MB."""
    info = proc.memory_full_info()
    return info.uss / MB, info.pss / MB


def baseline_memory() -> tuple[float, float]:
    """USS and PSS (MB) of a bare ``python -c 'import nats'`` beside the system measured."""
    proc = subprocess.Popen(
        [sys.executable, "-c", BASELINE], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        return _memory(psutil.Process(proc.pid))
    finally:
        proc.kill()
        proc.wait()


def default_system_memory(settle: float = 3.0) -> dict[str, Any]:
    """``eevee up`` on config/eevee.toml, as a user runs it: once every operator is RUNNING,
    the PSS of its whole process tree and the USS of each kind of process, in MB."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            **{f"XDG_{d}_HOME": f"{tmp}/{d.lower()}" for d in ("STATE", "DATA", "CACHE")},
            "PYTHONPATH": str(ROOT),
        }
        eevee = [sys.executable, "-m", "eeveepy.cli.main"]
        config = ["-c", str(ROOT / "config" / "eevee.toml")]
        up = subprocess.Popen(
            [*eevee, "up", *config, "--no-status"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if time.monotonic() > deadline or up.poll() is not None:
                    raise TimeoutError("the default system did not come up within 60 s")
                ps = subprocess.run(
                    [*eevee, "ps", *config, "--json"], env=env, cwd=ROOT, capture_output=True
                )
                ops = json.loads(ps.stdout) if ps.returncode == 0 else []
                if ops and all(op["state"] == "RUNNING" for op in ops):
                    break
                time.sleep(0.5)
            time.sleep(settle)
            supervisor = psutil.Process(up.pid)
            kinds: dict[str, list[tuple[float, float]]] = {}
            titled: dict[str, float] = {}
            for proc in [supervisor, *supervisor.children(recursive=True)]:
                name = " ".join(proc.cmdline()).strip()
                kind = (
                    "supervisor"
                    if proc.pid == up.pid
                    else "nats-server"
                    if proc.name() == "nats-server"
                    else "fork server"
                    if "fork server" in name
                    else "operator"
                )
                kinds.setdefault(kind, []).append(_memory(proc))
                if kind == "operator":  # titled "eevee: <id>"
                    titled[name.removeprefix("eevee: ")] = kinds[kind][-1][0]
        finally:
            up.terminate()
            up.wait(30)
    return {
        "processes": sum(len(v) for v in kinds.values()),
        "pss_mb": sum(pss for v in kinds.values() for _, pss in v),
        # nats-server's own memory moves by megabytes from run to run (JetStream, Go's
        # collector): the rest compares better between runs.
        "python_pss_mb": sum(pss for k, v in kinds.items() if k != "nats-server" for _, pss in v),
        "uss_mb": {k: statistics.median(uss for uss, _ in v) for k, v in kinds.items()},
        "operators": len(kinds.get("operator", [])),
        "operator_uss_mb": dict(sorted(titled.items(), key=lambda kv: -kv[1])),
    }


def print_memory(minimal_uss: float) -> None:
    """The memory section: every figure beside the same-run baseline."""
    system = default_system_memory()
    base_uss, base_pss = baseline_memory()
    uss = system["uss_mb"]
    print(
        f"  baseline (python -c 'import nats', this run): USS {base_uss:.1f} MB,"
        f" PSS {base_pss:.1f} MB"
    )
    print(
        f"  whole default system ({system['processes']} processes, {system['operators']}"
        f" operators): PSS {system['pss_mb']:.1f} MB = {system['pss_mb'] / base_pss:.1f}x"
        " the baseline's PSS (target <= 100 MB)"
    )
    print(f"    without nats-server: PSS {system['python_pss_mb']:.1f} MB")
    for kind in ("supervisor", "fork server", "operator", "nats-server"):
        if kind in uss:
            print(
                f"    {kind + (' (median)' if kind == 'operator' else '')}: USS"
                f" {uss[kind]:.1f} MB = {uss[kind] / base_uss:.2f}x the baseline's USS"
            )
    each = ", ".join(f"{op} {mb:.1f}" for op, mb in system["operator_uss_mb"].items())
    print(f"    each operator's USS (MB): {each}")
    print(
        f"  minimal forked operator: USS {minimal_uss:.1f} MB ="
        f" {minimal_uss / base_uss:.2f}x the baseline's USS (target <= 6 MB)"
    )


def main() -> None:
    count = 50
    fresh = asyncio.run(startup(count, forkserver=False))
    print(f"  {count} operators, fresh interpreters: {fresh['seconds']:.2f} s to all RUNNING")
    fork = asyncio.run(startup(count, forkserver=True))
    print(
        f"  {count} operators, fork server:       {fork['seconds']:.2f} s to all RUNNING"
        f"  (target <= 5 s; {fresh['seconds'] / fork['seconds']:.1f}x faster)"
    )
    print(
        f"  kill -9 -> RUNNING again: p50 {fork['restart_p50_s'] * 1000:.0f} ms,"
        f" max {fork['restart_max_s'] * 1000:.0f} ms (target p50 <= 1 s)"
    )
    print(
        f"  minimal operator memory: RSS {fork['rss_mb_median']:.1f} MB,"
        f" USS {fork['uss_mb_median']:.1f} MB, PSS {fork['pss_mb_median']:.1f} MB"
        " (target RSS <= 40 MB)"
    )
    print(
        f"  supervisor CPU pinging {count} operators every 2 s:"
        f" {fork['supervisor_cpu_percent']:.2f} % (target <= 2 %)"
    )
    big = asyncio.run(startup(200, forkserver=True))
    print(
        f"  200 operators, fork server:      {big['seconds']:.2f} s to all RUNNING"
        f" (target <= 3 s; {big['seconds'] / fork['seconds']:.1f}x the time of {count});"
        f" CPU of every process meanwhile {big['cpu_seconds']:.1f} s"
        f" ({big['cpu_seconds'] / fork['cpu_seconds']:.1f}x that of {count})"
    )
    shares = ", ".join(
        f"{kind} {cpu / big['cpu_seconds']:.0%}" for kind, cpu in big["cpu_by_kind"].items()
    )
    print(f"    that CPU by process: {shares}")
    print(
        f"  supervisor CPU pinging 200 operators every 2 s:"
        f" {big['supervisor_cpu_percent']:.2f} % (target <= 2 %)"
    )
    print_memory(big["uss_mb_median"])
    bus = asyncio.run(bus_recovery())
    print(
        f"  kill -9 of the bus -> an operator answers again: p50 {bus['p50_s'] * 1000:.0f} ms,"
        f" max {bus['max_s'] * 1000:.0f} ms (of 5; beside kill -9 of an operator:"
        f" {bus['p50_s'] / fork['restart_p50_s']:.1f}x its restart p50)"
    )


if __name__ == "__main__":
    main()
