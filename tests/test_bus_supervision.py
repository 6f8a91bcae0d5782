"""The bus supervised like an operator, and reloads as transactions.

kill -9 of the embedded nats-server under a running ``eevee up``: it is reaped and restarted on
the same port and store, operators keep running, KV data and the log history survive, commands
and the CLI work again within seconds; a server that keeps dying is FATAL. Configuration
reloads after a failed login work, and a reload that fails changes nothing and says why.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import psutil
import pytest
import structlog
from supervisor_fixtures import (
    EEVEE,
    System,
    alive,
    bash_op,
    hook_op,
    immutable,
    run_async,
    system_factory,
    wait_for,
)

from eeveepy.bus.client import BusConfig, connect
from eeveepy.bus.natsserver import EmbeddedNats
from eeveepy.supervisor.buswatch import BusWatch

OPERATORS: dict[str, dict[str, Any]] = {
    "router": {"module": "operators.router", "settings": {"prefixes": ["!"]}},
    "echo": {"module": "operators.echo"},
}


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    with system_factory(tmp_path) as make:
        yield make()


def nats_server_of(system: System) -> psutil.Process:
    servers = [p for p in system.collect() if p.name() == "nats-server" and alive(p)]
    assert len(servers) == 1, servers
    return servers[0]


def echo(system: System, text: str) -> bool:
    """``!echo text`` through ``eevee chat``: the command round trip works."""
    result = system.cli("chat", "--timeout", "2", input=f"!echo {text}\n")
    return result.returncode == 0 and text in result.stdout


async def kv(state: dict[str, Any], value: bytes | None = None) -> bytes | None:
    """Put ``value`` in the bucket ``kept`` (with the CLI's credentials), or read it back."""
    nc = await nats.connect(
        state["url"], user=state["user"], password=state["password"], allow_reconnect=False
    )
    try:
        js = nc.jetstream()
        if value is not None:
            await (await js.create_key_value(bucket="kept")).put("k", value)
            return value
        return (await (await js.key_value("kept")).get("k")).value
    finally:
        await nc.close()


def test_kill_9_of_the_bus_under_a_running_supervisor(system: System) -> None:
    system.write(OPERATORS).up(*OPERATORS)
    wait_for(lambda: echo(system, "before"), 20, what="echo registered", interval=0.2)
    state = json.loads(system.state_file.read_text())
    run_async(kv(state, b"kept across the restart"))
    before = wait_for(system.status, 5, what="a status")
    victim = nats_server_of(system)

    killed = time.monotonic()
    victim.kill()
    ps = system.cli("ps", "--json")  # the CLI waits for the bus coming back
    assert ps.returncode == 0, ps.stderr
    assert "Traceback" not in ps.stderr
    after = {op["id"]: op for op in json.loads(ps.stdout)}
    for op_id, op in before.items():  # the operators kept running: not restarted, not stopped
        assert (after[op_id]["state"], after[op_id]["pid"]) == ("RUNNING", op["pid"]), after
        assert after[op_id]["restarts"] == op["restarts"]
    assert echo(system, "after")
    recovered = time.monotonic() - killed
    assert recovered < 10, f"commands worked again only after {recovered:.1f} s"

    # Reaped (no <defunct>), and a new server on the same URL with the same store.
    wait_for(lambda: not psutil.pid_exists(victim.pid), 5, what="the dead server reaped")
    assert nats_server_of(system).pid != victim.pid
    assert json.loads(system.state_file.read_text())["url"] == state["url"]
    assert run_async(kv(state)) == b"kept across the restart"
    zombies = [p for p in system.collect() if p.status() == psutil.STATUS_ZOMBIE]
    assert not zombies, zombies

    # Said once, at error level; the log history stream kept what came before the kill.
    log = system.log()
    assert log.count("the embedded nats-server was killed by SIGKILL") == 1, log[-3000:]
    assert "[error" in log.split("was killed by SIGKILL")[0].rsplit("\n", 1)[-1]
    assert log.count("Connect call failed") <= len(OPERATORS) + 1, log[-3000:]
    history = system.cli("logs", "-n", "1000").stdout
    assert "spawned" in history  # (before the kill: nothing was spawned after it)
    assert "was killed by SIGKILL" in history
    assert system.op("echo")["state"] == "RUNNING"


async def test_a_bus_that_keeps_dying_is_fatal(tmp_path: Path) -> None:
    server = EmbeddedNats(store_dir=tmp_path, jetstream=False)
    await server.start()
    fatal: list[str] = []
    watch = BusWatch(
        server,
        log=structlog.get_logger("test"),
        on_fatal=fatal.append,
        backoff_initial=0.02,
        backoff_max=0.05,
        max_restarts=2,
        window=30,
    )
    watch.start()
    nc = await connect(  # the supervisor's connection, as the watch follows it
        BusConfig(),
        name="test",
        url=server.url,
        on_disconnect=watch.disconnected,
        on_reconnect=watch.reconnected,
    )
    try:
        port = server.port
        for restart in (1, 2):
            pid = server.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await _eventually(lambda n=restart: watch.restarts == n and watch.connected, 5)
            assert server.running
            assert server.pid != pid
            assert server.port == port
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        await _eventually(lambda: bool(fatal), 5)
        assert "FATAL" in fatal[0], fatal
        assert "keeps dying (3 exits in 30 s" in fatal[0], fatal
        assert "SIGKILL" in fatal[0]
        assert watch.fatal == fatal[0]
        await asyncio.sleep(0.3)
        assert not server.running
        assert watch.restarts == 2
    finally:
        await nc.close()
        await watch.stop()
        await server.stop()


async def _eventually(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


# -- reloads -------------------------------------------------------------------------------------


def failed_login(system: System) -> None:
    """What anyone on the machine can do: leave an [ERR] line in nats-server.log."""
    state = json.loads(system.state_file.read_text())

    async def attempt() -> None:
        async def quiet(exc: Exception) -> None:
            pass

        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(
                state["url"],
                user="eevee-cli",
                password="wrong",
                allow_reconnect=False,
                connect_timeout=2,
                error_cb=quiet,
            )

    run_async(attempt())
    server_log = system.state_dir / "nats" / "nats-server.log"
    wait_for(lambda: "[ERR]" in server_log.read_text(), 5, what="the failed login in the log")


def test_reloads_after_a_failed_login(system: System, tmp_path: Path) -> None:
    keep = hook_op(tmp_path / "hooks.jsonl")  # (it handles SIGHUP: a reload keeps it running)
    system.write({"keep": keep}).up("keep")
    keep_pid = system.op("keep")["pid"]
    failed_login(system)

    system.write({"keep": keep, "new": bash_op()})
    system.signal(signal.SIGHUP)
    system.wait_state("new", "RUNNING")
    failed_login(system)
    system.write({"keep": keep, "third": bash_op()})  # adds one, removes one
    system.signal(signal.SIGHUP)
    system.wait_state("third", "RUNNING")
    wait_for(lambda: "new" not in (system.status() or {"new": 1}), 5, what="new removed")
    assert system.op("keep")["pid"] == keep_pid
    log = system.log()
    assert log.count("configuration reloaded") == 2, log[-3000:]
    assert "not reloaded" not in log
    assert "never retrieved" not in log


def test_a_failed_reload_changes_nothing_and_says_why(system: System, tmp_path: Path) -> None:
    keep_op = hook_op(tmp_path / "hooks.jsonl")
    system.write({"keep": keep_op}).up("keep")
    keep = system.op("keep")["pid"]
    system.write({"keep": keep_op, "new": bash_op()})
    with immutable(system.state_dir / "nats" / "conf"):  # the bus configuration cannot change
        system.signal(signal.SIGHUP)
        wait_for(lambda: "the bus refused the users" in system.log(), 5, what="the reload error")
        result = system.cli("ctl", "reload", "supervisor")
        assert result.returncode == 1
        assert "configuration not reloaded" in result.stderr
        assert "Operation not permitted" in result.stderr
        status = system.status()
        assert status is not None
        assert list(status) == ["keep"]
        assert status["keep"]["pid"] == keep
        errors = system.cli("logs", "--level", "error", "--grep", "refused the users").stdout
        assert "configuration not reloaded" in errors  # on the bus log, at error level
    system.signal(signal.SIGHUP)  # writable again: the same reload goes through
    system.wait_state("new", "RUNNING")
    assert system.op("keep")["pid"] == keep
    assert "never retrieved" not in system.log()


def test_down_while_the_bus_stays_down_says_so_and_stops_by_signal(system: System) -> None:
    system.write({"bash": bash_op()}).up("bash")
    server = nats_server_of(system)
    system.signal(signal.SIGSTOP)  # the supervisor cannot restart the bus for now
    try:
        server.kill()
        down = subprocess.Popen(
            [str(EEVEE), "-c", str(system.config), "down", "--timeout", "15"],
            env=system.env,
            cwd=system.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert down.stderr is not None
        waiting = down.stderr.readline()
        assert "does not answer; waiting up to 5 s" in waiting, waiting
        said = down.stderr.readline() + down.stderr.readline()
    finally:
        system.signal(signal.SIGCONT)
    out, err = down.communicate(timeout=30)
    assert "is running but its bus at nats://127.0.0.1:" in said, said
    assert "does not answer" in said
    assert "sending SIGTERM to eevee" in said, said
    assert "Traceback" not in said + err
    assert down.returncode == 0, err
    assert "eevee is down" in out
    assert system.proc is not None
    assert system.proc.wait(5) == 0
