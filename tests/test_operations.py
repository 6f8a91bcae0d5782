"""An operator's day with one running system: a second ``eevee up`` refused, log levels that
mean something, ``ps ID``, process titles, and ``eevee reload`` (plan, problems, SIGHUP).

One supervisor serves the whole module (the reload tests restore its configuration); the
clean-stop test runs a small system of its own, since it has to stop it.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from supervisor_fixtures import (
    CRASH_OPERATOR,
    System,
    bash_op,
    hook_op,
    system_factory,
    wait_for,
)

OPERATORS: dict[str, dict[str, Any]] = {
    "bash": bash_op(),
    "echo": {"module": "operators.echo"},
    "crash": bash_op(CRASH_OPERATOR, max_restarts=1, restart_window=30),
    "badrouter": {"module": "operators.router", "settings": {"prefixes": 3}},
}


@dataclass
class Running:
    """The module's system and the operator tables of its configuration."""

    system: System
    operators: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def _running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("ops")
    operators = {**OPERATORS, "hooks": hook_op(root / "hooks.jsonl")}
    sys_ = System(root / "sys").write(operators)
    try:
        sys_.up("bash", "echo", "hooks")
        sys_.wait_state("crash", "FATAL", timeout=15)
        sys_.wait_state("badrouter", "FATAL", timeout=15)
        yield Running(sys_, operators)
    finally:
        sys_.stop()


@pytest.fixture
def system(_running: Running) -> System:
    return _running.system


@pytest.fixture
def operators(_running: Running) -> dict[str, dict[str, Any]]:
    return dict(_running.operators)


def log_records(system: System, *args: str) -> list[dict[str, Any]]:
    """``eevee logs --json ARGS``: the records' bodies."""
    result = system.cli("logs", "--json", "-n", "1000", *args)
    assert result.returncode == 0, result
    return [json.loads(line)["body"] for line in result.stdout.splitlines()]


# -- one supervisor per state directory ---------------------------------------------------------


def test_a_second_up_on_the_same_state_dir_refuses_and_leaves_the_first_alone(
    system: System,
) -> None:
    before = system.status()
    assert before is not None
    state = system.state_file.read_text()
    second = system.cli("up", timeout=30)
    assert second.returncode == 1, second
    assert f"another eevee up (pid {system.pid}, running since" in second.stderr
    assert "holds the state directory" in second.stderr
    assert "Traceback" not in second.stderr
    # The first one runs on, reachable, with the same operators and state file.
    system.check_alive()
    assert system.state_file.read_text() == state
    after = system.status()
    assert after is not None
    assert {i: s["pid"] for i, s in after.items()} == {i: s["pid"] for i, s in before.items()}


# -- log levels ---------------------------------------------------------------------------------


def test_a_crash_is_a_warning_and_giving_up_an_error(system: System) -> None:
    warnings = log_records(system, "--level", "warning")
    crash = [r for r in warnings if r["fields"].get("operator") == "crash"]
    backoff = [r for r in crash if r["fields"].get("state") == "BACKOFF"]
    fatal = [r for r in crash if r["fields"].get("state") == "FATAL"]
    assert backoff, warnings
    assert {r["level"] for r in backoff} == {"warning"}
    assert "exit code 3" in backoff[0]["event"]
    assert fatal, warnings
    assert {r["level"] for r in fatal} == {"error"}
    # Invalid settings are pointed at in eevee.toml, not in a settings file made from it.
    where = f"{system.config}: operators.badrouter.settings.prefixes"
    assert [r for r in warnings if r["fields"].get("where") == where], warnings
    # The healthy operators said nothing worth a warning.
    healthy = {"bash", "echo", "hooks"}
    assert not [r for r in warnings if r["fields"].get("operator") in healthy], warnings


def test_a_signal_is_named_in_the_exit_message(system: System) -> None:
    pid = system.wait_state("bash", "RUNNING")["pid"]
    psutil.Process(pid).send_signal(signal.SIGKILL)
    op = system.wait_op("bash", lambda s: "killed by SIGKILL" in s["message"], timeout=10)
    assert "exit code -9" not in op["message"]
    system.wait_state("bash", "RUNNING")


# -- ps, titles -----------------------------------------------------------------------------------


def test_ps_shows_only_the_operators_named(system: System) -> None:
    result = system.cli("ps", "--json", "bash", "hooks")
    assert result.returncode == 0, result
    assert [op["id"] for op in json.loads(result.stdout)] == ["bash", "hooks"]
    unknown = system.cli("ps", "bash", "nope")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("eevee: unknown operator nope (known: ")
    assert unknown.stdout == ""


def test_process_titles_name_the_operator(system: System) -> None:
    for op_id in ("echo", "hooks"):  # forked by the fork server; a fresh interpreter
        pid = system.wait_state(op_id, "RUNNING")["pid"]
        assert " ".join(psutil.Process(pid).cmdline()).strip() == f"eevee: {op_id}"
    # The title takes the command line's space only: the environment stays readable.
    hooks = psutil.Process(system.op("hooks")["pid"])
    assert hooks.environ()["EEVEE_OPERATOR_ID"] == "hooks"


# -- reload -------------------------------------------------------------------------------------


def test_reload_prints_the_plan_and_applies_it(
    system: System, operators: dict[str, dict[str, Any]]
) -> None:
    pid = system.wait_state("hooks", "RUNNING")["pid"]
    system.write({**operators, "late": bash_op()})
    try:
        early = system.cli("ctl", "start", "late")
        assert early.returncode == 1
        assert "unknown operator 'late'" in early.stderr
        assert "`eevee reload` adds it" in early.stderr

        result = system.cli("reload", "--json")
        assert result.returncode == 0, result
        out = json.loads(result.stdout)
        assert out["ok"] is True
        assert out["plan"]["added"] == ["late"]
        assert sorted(out["plan"]["unchanged"]) == ["badrouter", "bash", "crash", "echo", "hooks"]
        assert out["plan"]["restarted"] == out["plan"]["reloaded"] == out["plan"]["removed"] == []
        system.wait_state("late", "RUNNING")
        assert system.op("hooks")["pid"] == pid  # unchanged: left alone

        system.write(operators)
        text = system.cli("reload")
        assert text.returncode == 0, text
        assert "removed    late" in text.stdout
        assert "configuration reloaded: removed late; 5 unchanged" in text.stdout
        wait_for(lambda: "late" not in (system.status() or {"late": 1}), 10, what="late gone")
    finally:
        system.write(operators)


def test_a_reload_with_problems_lists_them_and_changes_nothing(
    system: System, operators: dict[str, dict[str, Any]]
) -> None:
    broken = {
        **operators,
        "weather": {"module": "weather_nowhere"},
        "tool": {"command": ["./no-such-tool"]},
        "bash": {**operators["bash"], "restart": "sometimes"},
    }
    system.write(broken)
    try:
        result = system.cli("reload")
        assert result.returncode == 2, result
        assert "Traceback" not in result.stderr
        lines = result.stderr.splitlines()
        assert lines[0] == "eevee: configuration not reloaded: 1 problem(s); nothing changed"
        assert f"{system.config}: operators.bash.restart: Input should be" in lines[1]

        del broken["bash"]
        broken["bash"] = operators["bash"]
        system.write(broken)
        result = system.cli("reload", "--json")
        assert result.returncode == 2, result
        problems = {p["where"]: p["what"] for p in json.loads(result.stdout)["problems"]}
        assert set(problems) == {
            f"{system.config}: operators.weather.module",
            f"{system.config}: operators.tool.command",
        }, problems
        assert (
            "no module named 'weather_nowhere'"
            in problems[f"{system.config}: operators.weather.module"]
        )
        assert set(system.status() or {}) == {"bash", "echo", "crash", "hooks", "badrouter"}

        system.signal(signal.SIGHUP)  # the same check; its problems go to the log at error level
        wait_for(
            lambda: [
                r
                for r in log_records(system, "--level", "error", "--since", "1m")
                if r["event"] == "configuration not reloaded"
                and r["fields"].get("where") == f"{system.config}: operators.tool.command"
            ],
            20,
            what="the SIGHUP reload's problems in the log",
        )
        assert set(system.status() or {}) == {"bash", "echo", "crash", "hooks", "badrouter"}
    finally:
        system.write(operators)


# -- a clean stop -------------------------------------------------------------------------------


def test_a_clean_stop_logs_no_warnings_and_logs_are_read_from_files_when_down(
    tmp_path: Path,
) -> None:
    with system_factory(tmp_path) as make:
        small = make("clean").write(
            {
                "logging": {"module": "operators.logging"},
                "hooks": hook_op(tmp_path / "hooks.jsonl"),
            }
        )
        small.up("logging", "hooks")
        wait_for(
            lambda: list(small.root.glob("xdg-*/**/operators/hooks.jsonl")),
            15,
            what="the logging operator's file of hooks",
        )
        down = small.cli("down")
        assert down.returncode == 0, down
        assert small.proc is not None
        small.proc.wait(10)
        log = small.log()
        noisy = [line for line in log.splitlines() if "[warning" in line or "[error" in line]
        assert not noisy, log
        assert "stopping: press Ctrl-C again" in log
        assert "bus disconnected" not in log  # its own close is no outage

        offline = small.cli("logs", "-n", "5", "--operator", "hooks")
        assert offline.returncode == 0, offline
        assert "reading the logging operator's files in" in offline.stderr
        lines = offline.stdout.splitlines()
        assert 0 < len(lines) <= 5, offline.stdout
        assert all(" hooks " in line or "operator=hooks" in line for line in lines), lines
        assert lines[0][:11] == f"{lines[0][:10]}T"  # the date comes first
        assert lines[0][:4].isdigit()
        follow = small.cli("logs", "-f")
        assert follow.returncode == 1
        assert "no running eevee found" in follow.stderr
