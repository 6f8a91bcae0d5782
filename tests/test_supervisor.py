"""The supervisor as a whole: ``eevee up`` as a real process, with real operator processes.

Restarts after a crash or a hang, flapping, reload and halt/resume reaching the operator,
configuration reloads, clean shutdowns (nothing left behind, even after SIGKILL of the
supervisor) and two supervisors sharing one bus. See ``supervisor_fixtures`` for the harness.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from supervisor_fixtures import (
    BASH_OPERATOR,
    CRASH_OPERATOR,
    EEVEE,
    HUNG_OPERATOR,
    System,
    alive,
    bash_op,
    hook_op,
    operator_processes,
    standalone_nats,
    system_factory,
    wait_for,
)

MakeSystem = Callable[..., System]


@pytest.fixture
def make_system(tmp_path: Path) -> Iterator[MakeSystem]:
    """``make_system(name)``: a System under tmp_path, stopped at the end of the test."""
    with system_factory(tmp_path) as make:
        yield make


def hook_calls(record: Path, pid: int | None = None) -> list[dict[str, Any]]:
    """The hook operator's recorded calls (of process ``pid`` only, when given)."""
    try:
        lines = record.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    calls = [json.loads(line) for line in lines if line.strip()]
    return [c for c in calls if pid is None or c["pid"] == pid]


def hooks_of(record: Path, pid: int, hook: str) -> list[dict[str, Any]]:
    return [c for c in hook_calls(record, pid) if c["hook"] == hook]


def kill9_and_wait_restart(system: System, op_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """SIGKILL the operator's process; wait until a new one is RUNNING; return its status."""
    before = system.wait_op(op_id, lambda s: s["state"] == "RUNNING" and s["pid"])
    victim = psutil.Process(before["pid"])
    victim.kill()
    after = system.wait_op(
        op_id,
        lambda s: s["state"] == "RUNNING" and s["pid"] not in (None, before["pid"]),
        timeout=timeout,
        what=f"{op_id} restarted after kill -9",
    )
    assert after["restarts"] == before["restarts"] + 1
    wait_for(lambda: not alive(victim), 5, what="the killed process to be gone")
    return after


# -- one system for the checks that leave it as it was ------------------------------------------


@dataclass
class Shared:
    system: System
    record: Path
    operators: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """bash (the bash operator), hooks (Python, eeveepy.runtime.operator) and echo (a module)."""
    root = tmp_path_factory.mktemp("shared")
    record = root / "hooks.jsonl"
    operators = {
        "bash": bash_op(),
        "hooks": hook_op(record),
        "echo": {"module": "operators.echo"},
    }
    system = System(root / "sys").write(operators)
    try:
        system.up("bash", "hooks", "echo")
        yield Shared(system, record, operators)
    finally:
        system.stop()


def test_operators_run_as_children_with_their_own_identity(shared: Shared) -> None:
    system = shared.system
    tree = {p.pid: p for p in system.collect()}
    status = wait_for(system.status, 5, what="status")
    for op_id in ("bash", "hooks", "echo"):
        op = status[op_id]
        assert op["state"] == "RUNNING"
        assert op["pid"] in tree, f"{op_id} (pid {op['pid']}) is not below the supervisor"
    bash = psutil.Process(status["bash"]["pid"])
    assert str(BASH_OPERATOR) in bash.cmdline()
    assert bash.environ()["EEVEE_OPERATOR_ID"] == "bash"
    hooks = hook_calls(shared.record, status["hooks"]["pid"])
    assert [c["hook"] for c in hooks][:1] == ["start"]


def test_bash_operator_is_supervised_like_a_python_one(shared: Shared) -> None:
    system = shared.system
    running = system.wait_op(
        "bash",
        lambda s: s["state"] == "RUNNING" and s["ping_ms"] is not None,
        what="a ping answered by the bash operator",
    )
    assert running["ping_ms"] > 0
    assert running["rss_bytes"] > 0
    after = kill9_and_wait_restart(system, "bash")
    system.wait_op("bash", lambda s: s["pid"] == after["pid"] and s["ping_ms"] is not None)


@pytest.mark.parametrize("op_id", ["hooks", "echo"])
def test_kill_9_of_an_operator_restarts_it(shared: Shared, op_id: str) -> None:
    after = kill9_and_wait_restart(shared.system, op_id)
    assert psutil.Process(after["pid"]).is_running()
    assert shared.system.op("bash")["state"] == "RUNNING"  # the others are left alone


def test_ctl_reload_and_sighup_reach_on_reload(shared: Shared) -> None:
    system, record = shared.system, shared.record
    pid = system.wait_state("hooks", "RUNNING")["pid"]
    wait_for(lambda: hooks_of(record, pid, "start"), 10, what="on_start of hooks")
    before = len(hooks_of(record, pid, "reload"))

    result = system.cli("ctl", "reload", "hooks")
    assert result.returncode == 0, result.stderr
    wait_for(
        lambda: len(hooks_of(record, pid, "reload")) == before + 1, 5, what="on_reload after ctl"
    )

    # The configuration is unchanged: a reload leaves the operator alone, and says so.
    result = system.cli("reload")
    assert result.returncode == 0, result.stderr
    assert "unchanged" in result.stdout, result.stdout
    assert "hooks" in result.stdout, result.stdout
    time.sleep(0.5)  # a SIGHUP sent before the reply would have reached the hook by now
    assert len(hooks_of(record, pid, "reload")) == before + 1
    assert system.op("hooks")["pid"] == pid  # reloaded, not restarted


def test_changed_settings_and_sighup_reach_on_reload(shared: Shared) -> None:
    system, record = shared.system, shared.record
    pid = system.wait_state("hooks", "RUNNING")["pid"]
    wait_for(lambda: hooks_of(record, pid, "start"), 10, what="on_start of hooks")
    hooks = dict(shared.operators["hooks"])
    hooks["settings"] = {**hooks["settings"], "greeting": "changed"}
    shared.operators["hooks"] = hooks
    system.write(shared.operators)

    system.signal(signal.SIGHUP)
    reloads = wait_for(
        lambda: [
            c for c in hooks_of(record, pid, "reload") if c["settings"].get("greeting") == "changed"
        ],
        5,
        what="on_reload with the new settings",
    )
    assert reloads[0]["settings"]["record"] == str(record)
    assert system.op("hooks")["pid"] == pid  # only settings changed: reloaded, not restarted


def test_halt_and_resume(shared: Shared) -> None:
    system, record = shared.system, shared.record
    pid = system.wait_state("hooks", "RUNNING")["pid"]

    result = system.cli("ctl", "halt", "hooks")
    assert result.returncode == 0, result.stderr
    ps = system.cli("ps", "--json")
    assert ps.returncode == 0, ps.stderr
    assert {op["id"]: op["state"] for op in json.loads(ps.stdout)}["hooks"] == "HALTED"
    assert hooks_of(record, pid, "halt")
    time.sleep(1.0)  # several pings: a halted operator still answers them
    halted = system.op("hooks")
    assert (halted["state"], halted["pid"], halted["ping_ms"] is not None) == ("HALTED", pid, True)

    result = system.cli("ctl", "resume", "hooks")
    assert result.returncode == 0, result.stderr
    assert system.op("hooks")["state"] == "RUNNING"
    assert hooks_of(record, pid, "resume")


def test_halt_of_an_operator_without_ctl_is_refused(shared: Shared) -> None:
    system = shared.system
    system.wait_state("bash", "RUNNING")
    result = system.cli("ctl", "halt", "bash")
    assert result.returncode == 1
    assert "bash did not accept halt" in result.stderr
    assert system.op("bash")["state"] == "RUNNING"


# -- systems of their own -------------------------------------------------------------------------


def test_operator_that_stops_answering_pings_is_restarted(make_system: MakeSystem) -> None:
    # A long backoff keeps BACKOFF (with its reason) visible for a while; pings that are
    # nearly always in flight make the shutdown below race with one.
    hung = bash_op(
        HUNG_OPERATOR,
        max_missed_pings=3,
        ping_interval=0.1,
        ping_timeout=0.5,
        backoff_initial=1.0,
        backoff_max=1.0,
    )
    system = make_system().write({"hung": hung}).up("hung")
    first = system.op("hung")
    old = psutil.Process(first["pid"])
    backoff = system.wait_op(
        "hung", lambda s: s["state"] == "BACKOFF", timeout=6, what="hung in BACKOFF"
    )
    assert "hung" in backoff["message"], backoff
    assert "3 pings missed" in backoff["message"], backoff
    assert not alive(old)
    again = system.wait_op(
        "hung",
        lambda s: s["state"] == "RUNNING" and s["pid"] != first["pid"],
        timeout=6,
        what="hung restarted",
    )
    assert again["restarts"] == first["restarts"] + 1

    # Stopped while a ping is in flight, its exit is still a requested stop, not a crash.
    result = system.cli("down", "--timeout", "10")
    assert result.returncode == 0, result.stderr
    stopping = system.log().split("stopping operators", 1)[1]
    assert "BACKOFF" not in stopping, stopping


def test_operator_that_exits_at_once_backs_off_then_is_fatal(
    make_system: MakeSystem, tmp_path: Path
) -> None:
    record = tmp_path / "starts.txt"
    crash = bash_op(
        CRASH_OPERATOR,
        max_restarts=2,
        backoff_initial=0.4,
        backoff_max=0.4,
        env={"RECORD": str(record)},
    )
    system = make_system().write({"crash": crash}).up()
    seen: list[str] = []

    def fatal() -> dict[str, Any] | None:
        op = (system.status() or {}).get("crash")
        if op and (not seen or seen[-1] != op["state"]):
            seen.append(op["state"])
        return op if op and op["state"] == "FATAL" else None

    op = wait_for(fatal, 10, what="crash to be FATAL", interval=0.02)
    assert "BACKOFF" in seen, seen
    assert "flapping" in op["message"]
    assert "exit code 3" in op["message"]
    assert "eevee ctl start crash" in op["message"]
    assert op["pid"] is None
    starts = record.read_text().splitlines()
    assert len(starts) == 3  # the first start and max_restarts restarts
    time.sleep(0.5)
    assert len(record.read_text().splitlines()) == 3, "a FATAL operator was started again"

    result = system.cli("ctl", "start", "crash")
    assert result.returncode == 1, result  # it did not come to RUNNING
    assert "crash is BACKOFF, not RUNNING: exit code 3" in result.stderr
    wait_for(lambda: len(record.read_text().splitlines()) == 6, 10, what="three more starts")
    system.wait_state("crash", "FATAL", timeout=5)


def test_sighup_adds_and_removes_operators(make_system: MakeSystem, tmp_path: Path) -> None:
    record = tmp_path / "hooks.jsonl"
    system = make_system().write({"keep": hook_op(record), "gone": bash_op()})
    system.up("keep", "gone")
    keep_pid = system.op("keep")["pid"]
    gone = psutil.Process(system.op("gone")["pid"])

    system.write({"keep": hook_op(record), "new": bash_op()})
    system.signal(signal.SIGHUP)
    system.wait_state("new", "RUNNING")
    wait_for(lambda: "gone" not in (system.status() or ["gone"]), 5, what="gone removed")
    wait_for(lambda: not alive(gone), 5, what="the removed operator's process to end")
    status = system.status()
    assert status is not None
    assert list(status) == ["keep", "new"]
    assert status["keep"]["pid"] == keep_pid
    assert psutil.Process(status["new"]["pid"]) in system.collect()


def test_invalid_configuration_on_sighup_changes_nothing(make_system: MakeSystem) -> None:
    system = make_system().write({"bash": bash_op()}).up("bash")
    pid = system.op("bash")["pid"]
    system.config.write_text(system.config.read_text() + "\n[operators.broken]\nmodule = 1\n")
    system.signal(signal.SIGHUP)
    wait_for(lambda: "configuration not reloaded" in system.log(), 5, what="the reload error")
    status = system.status()
    assert status is not None
    assert list(status) == ["bash"]
    assert status["bash"]["pid"] == pid


def test_down_leaves_no_process_behind(make_system: MakeSystem, tmp_path: Path) -> None:
    system = make_system().write({"bash": bash_op(), "hooks": hook_op(tmp_path / "h.jsonl")})
    system.up("bash", "hooks")
    tree = system.collect()
    names = {p.name() for p in tree}
    assert "nats-server" in names, names
    assert len(tree) >= 4  # supervisor, nats-server, two operators

    result = system.cli("down", "--timeout", "10")
    assert result.returncode == 0, result.stderr
    assert "eevee is down" in result.stdout
    assert system.proc is not None
    assert system.proc.wait(5) == 0
    wait_for(lambda: not [p for p in tree if alive(p)], 3, what="every process to be gone")
    assert not system.state_file.exists()
    calls = [c["hook"] for c in hook_calls(tmp_path / "h.jsonl")]
    assert calls[-1] == "stop", calls  # a graceful stop: on_stop ran
    stopping = system.log().split("stopping operators", 1)[1]
    assert "BACKOFF" not in stopping, stopping  # a requested stop is no crash
    assert "restarting" not in stopping, stopping


def test_sigkill_of_the_supervisor_takes_everything_down(
    make_system: MakeSystem, tmp_path: Path
) -> None:
    system = make_system().write(
        {
            "bash": bash_op(),
            "hooks": hook_op(tmp_path / "h.jsonl"),
            "echo": {"module": "operators.echo"},
        }
    )
    system.up("bash", "hooks", "echo")
    tree = system.collect()
    assert len(tree) >= 5  # supervisor, nats-server, three operators (and maybe a fork server)
    system.signal(signal.SIGKILL)
    assert system.proc is not None
    system.proc.wait(5)
    t0 = time.monotonic()
    wait_for(
        lambda: not [p for p in tree if alive(p)],
        5,
        what="the operators and nats-server to die with the supervisor",
    )
    assert time.monotonic() - t0 < 5


def test_two_supervisors_on_one_bus_never_run_the_same_operator(
    make_system: MakeSystem, tmp_path: Path
) -> None:
    with standalone_nats(tmp_path / "bus") as url:
        config = {"prefix": "dual", "bus_url": url}
        first = make_system("first").write(
            {"solo": bash_op()}, supervisor={"name": "alpha"}, **config
        )
        second = make_system("second").write(
            {"solo": bash_op()}, supervisor={"name": "beta"}, **config
        )
        first.up("solo")
        second.up()
        waiting = second.wait_op(
            "solo",
            lambda s: s["state"] == "STOPPED" and "alpha" in s["message"],
            what="beta waiting for alpha's lease",
        )
        assert "waiting" in waiting["message"]
        assert waiting["pid"] is None
        roots = [first.process, second.process]
        watched: list[psutil.Process] = []  # alpha's operator, even if it outlived alpha

        def only_one() -> list[psutil.Process]:
            procs = operator_processes("solo", roots, watched)
            assert len(procs) <= 1, f"solo runs twice: {procs}"
            return procs

        deadline = time.monotonic() + 1.5  # several lease renewals and retries
        while time.monotonic() < deadline:
            assert len(only_one()) == 1
            time.sleep(0.1)
        alpha_solo = first.op("solo")  # each sees its own supervisor
        assert alpha_solo["state"] == "RUNNING"
        assert second.op("solo")["state"] == "STOPPED"
        watched.append(psutil.Process(alpha_solo["pid"]))
        assert only_one() == watched

        first.collect()
        killed_at = time.monotonic()
        first.signal(signal.SIGKILL)
        assert first.proc is not None
        first.proc.wait(5)
        taken = second.wait_op(
            "solo",
            lambda s: s["state"] == "RUNNING" and s["pid"] and only_one() is not None,
            timeout=2 + 4,  # lease_ttl + a few seconds
            what="beta taking solo over",
        )
        assert time.monotonic() - killed_at < 6
        procs = only_one()
        assert [p.pid for p in procs] == [taken["pid"]]
        assert procs[0].environ()["EEVEE_SUPERVISOR"] == "beta"

        second.stop()  # before the bus goes


def test_supervisor_outlives_its_console(make_system: MakeSystem) -> None:
    """The terminal `eevee up` writes to goes away: supervision must go on regardless."""
    system = make_system().write({"bash": bash_op(), "echo": {"module": "operators.echo"}})
    proc = subprocess.Popen(
        [str(EEVEE), "-c", str(system.config), "up"],
        env=system.env,
        cwd=system.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    system.proc = proc
    system.seen[proc.pid] = psutil.Process(proc.pid)
    wait_for(system.status, 20, what="the supervisor to answer")
    system.wait_state("bash", "RUNNING")
    system.wait_state("echo", "RUNNING")
    assert proc.stdout is not None
    proc.stdout.close()  # every console write from now on fails (EPIPE)
    for op_id in ("bash", "echo"):
        old = system.op(op_id)["pid"]
        os.kill(old, signal.SIGKILL)
        status = system.wait_op(
            op_id,
            lambda s, old=old: s["state"] == "RUNNING" and s["pid"] not in (None, old),
            timeout=15,
            what=f"{op_id} restarted after the console closed",
        )
        assert status["restarts"] == 1
    assert proc.poll() is None
