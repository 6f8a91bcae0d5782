"""Logging end to end: operators' logs reach the bus, `eevee logs`, and the logging operator."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eeveepy.protocol.codec import EnvelopeEncoder
from eeveepy.protocol.models import LogLevel, LogRecord
from tests.supervisor_fixtures import System, bash_op, python_op, system_factory, wait_for

CHATTY = Path(__file__).parent / "operators" / "chatty_operator.py"
MakeSystem = Callable[..., System]


@pytest.fixture
def make_system(tmp_path: Path) -> Iterator[MakeSystem]:
    with system_factory(tmp_path) as make:
        yield make


def logs_json(system: System, *args: str) -> list[dict[str, Any]]:
    res = system.cli("logs", "--json", *args)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def bodies(envs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["body"] for e in envs]


def test_python_and_bash_logs_reach_eevee_logs(make_system: MakeSystem, tmp_path: Path) -> None:
    files = tmp_path / "logfiles"
    system = make_system().write(
        {
            "chatty": python_op(CHATTY),
            "bash": bash_op(),
            "logging": {"module": "operators.logging", "settings": {"directory": str(files)}},
        }
    )
    system.up("chatty", "bash", "logging")

    def found() -> list[dict[str, Any]] | None:
        got = bodies(logs_json(system))
        py = [b for b in got if b["operator"] == "chatty" and b["event"] == "hello from python"]
        sh = [
            b for b in got if b["operator"] == "bash" and "bash operator bash ready" in b["event"]
        ]
        return got if py and sh else None

    got = wait_for(found, 15, what="both operators' events in eevee logs")
    py = next(b for b in got if b["event"] == "hello from python")
    assert py["level"] == "warning"
    assert py["fields"]["pid"] == system.op("chatty")["pid"]
    sh = next(b for b in got if b["operator"] == "bash" and "ready" in b["event"])
    assert sh["level"] == "info"
    assert sh["stream"] == "stdout"
    # Filters: by operator and level.
    only = bodies(logs_json(system, "--operator", "chatty", "--level", "warning"))
    assert only
    assert all(b["level"] in ("warning", "error", "critical") for b in only)
    assert all(b["operator"] in ("chatty", "supervisor") for b in only)
    assert bodies(logs_json(system, "--grep", "HELLO FROM")) == [py]
    # The logging operator wrote it to its file.
    path = files / "chatty.jsonl"
    wait_for(lambda: path.exists() and "hello from python" in path.read_text(), 10)
    line = next(
        json.loads(raw) for raw in path.read_text().splitlines() if "hello from python" in raw
    )
    assert line["body"]["operator"] == "chatty"
    # The logging operator asked the supervisor for the configured ids (chatty got its file);
    # an id nobody configured gets none: its events go to the shared _unknown file.
    record = LogRecord(operator="made-up", level=LogLevel.INFO, event="not configured")
    res = system.cli("pub", "log.info.made-up", EnvelopeEncoder("x").encode(record)[1].decode())
    assert res.returncode == 0, res.stderr
    unknown = files / "_unknown.jsonl"
    wait_for(lambda: unknown.exists() and "not configured" in unknown.read_text(), 10)
    assert not (files / "made-up.jsonl").exists()


def test_follow_sees_a_restarted_operator(make_system: MakeSystem) -> None:
    system = make_system().write({"chatty": python_op(CHATTY)})
    system.up("chatty")
    first = system.op("chatty")["pid"]
    follower = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "eevee"),
            "-c",
            str(system.config),
            "logs",
            "-f",
            "--json",
            "--operator",
            "chatty",
            "--lines",
            "0",
        ],
        env=system.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # the follower is subscribed
        os.kill(first, signal.SIGKILL)
        system.wait_op("chatty", lambda s: s["state"] == "RUNNING" and s["pid"] != first)
        second = system.op("chatty")["pid"]
        assert follower.stdout is not None
        deadline = time.monotonic() + 15
        seen = False
        while time.monotonic() < deadline and not seen:
            line = follower.stdout.readline()
            if not line:
                break
            body = json.loads(line)["body"]
            seen = body["event"] == "hello from python" and body["fields"].get("pid") == second
        assert seen, "the restarted operator's event did not reach `eevee logs -f`"
    finally:
        follower.send_signal(signal.SIGINT)
        try:
            follower.wait(5)
        except subprocess.TimeoutExpired:
            follower.kill()
            follower.wait()


def test_follow_survives_a_restart_of_eevee(make_system: MakeSystem) -> None:
    """`eevee logs -f` waits through `eevee down` and up again and goes on following: what
    the new system logs is shown, nothing is shown twice."""
    system = make_system().write({"chatty": python_op(CHATTY)})
    system.up("chatty")
    first = system.op("chatty")["pid"]
    eevee = str(Path(sys.executable).parent / "eevee")
    follower = subprocess.Popen(
        [eevee, "-c", str(system.config), "logs", "-f", "--json", "-o", "chatty", "-n", "5"],
        env=system.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    out = follower.stdout
    assert out is not None

    def read() -> None:
        for line in out:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    shown: list[dict[str, Any]] = []

    def shown_event(pid: int) -> bool:
        with contextlib.suppress(queue.Empty):
            while True:
                shown.append(json.loads(lines.get(timeout=0.2)))
        return any(
            e["body"]["event"] == "hello from python" and e["body"]["fields"].get("pid") == pid
            for e in shown
        )

    try:
        wait_for(lambda: shown_event(first), 15, what="the first event in `eevee logs -f`")
        system.stop()
        system.proc = None
        time.sleep(1.5)  # the follower notices and waits
        assert follower.poll() is None, follower.stderr.read() if follower.stderr else ""
        system.up("chatty")
        second = system.op("chatty")["pid"]
        wait_for(lambda: shown_event(second), 20, what="the new system's event after the restart")
        ids = [e["id"] for e in shown]
        assert len(ids) == len(set(ids)), "a record was shown twice"
    finally:
        follower.send_signal(signal.SIGINT)
        try:
            _, err = follower.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            follower.kill()
            _, err = follower.communicate()
    assert "waiting for eevee to come back" in err, err
    assert "connected again" in err, err


def test_a_log_flood_does_not_stop_pings(make_system: MakeSystem) -> None:
    system = make_system().write(
        {"chatty": python_op(CHATTY, settings={"flood": 100_000})},
        supervisor={"ping_interval": 0.3, "ping_timeout": 0.5, "max_missed_pings": 3},
    )
    system.up("chatty", timeout=30)
    pid = system.op("chatty")["pid"]

    def flood_done() -> bool:
        # The last line may itself be dropped by the operator's bounded log queue; then the
        # writer reports how many lines it dropped once it has caught up.
        got = bodies(logs_json(system, "--operator", "chatty", "--level", "info", "-n", "50"))
        return any(b["event"] in ("flood done", "log lines dropped") for b in got)

    # While the flood runs and after it, the operator keeps answering pings: never restarted.
    wait_for(flood_done, 60, what="the end of the flood in the logs", interval=0.5)
    status = system.op("chatty")
    assert status["pid"] == pid
    assert status["restarts"] == 0
    assert status["state"] == "RUNNING"
    # A loaded machine may let one 0.5 s ping time out; two in a row means pings were stuck.
    misses = [line for line in system.log().splitlines() if "missed ping" in line]
    assert all("missed=1" in line for line in misses), "\n".join(misses)
