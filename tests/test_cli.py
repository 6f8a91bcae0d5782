"""The ``eevee`` command: exit codes and messages of up, ps, ctl, down, config check, schema.

Commands run as the real console script, with XDG directories of their own (see
``supervisor_fixtures``); the commands that need a running supervisor share one.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from supervisor_fixtures import (
    EEVEE,
    ROOT,
    System,
    alive,
    bash_op,
    immutable,
    isolated_env,
    standalone_nats,
    system_factory,
    wait_for,
)

MakeSystem = Callable[..., System]

PS_KEYS = {"id", "state", "pid", "restarts", "uptime_s", "rss_bytes", "nice", "ping_ms"}


@pytest.fixture
def make_system(tmp_path: Path) -> Iterator[MakeSystem]:
    """``make_system(name)``: a System under tmp_path, stopped at the end of the test."""
    with system_factory(tmp_path) as make:
        yield make


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """One supervisor running the bash operator, for the commands that need one."""
    system = System(tmp_path_factory.mktemp("cli") / "sys").write({"bash": bash_op()})
    try:
        yield system.up("bash")
    finally:
        system.stop()


def eevee(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EEVEE), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# -- without a running supervisor --------------------------------------------------------------


@pytest.mark.parametrize("args", [("ps",), ("ps", "--json"), ("ctl", "restart", "bash"), ("down",)])
def test_commands_without_a_running_supervisor_say_to_start_one(
    make_system: MakeSystem, args: tuple[str, ...]
) -> None:
    system = make_system().write({"bash": bash_op()})
    result = system.cli(*args)
    assert result.returncode == 1, result
    assert "no running eevee found" in result.stderr
    assert "start one with `eevee up`" in result.stderr
    assert result.stdout == ""


def test_ps_with_a_stale_state_file(make_system: MakeSystem) -> None:
    system = make_system().write({})
    dead = subprocess.Popen(["true"])
    dead.wait()
    system.state_dir.mkdir(parents=True)
    system.state_file.write_text(json.dumps({"pid": dead.pid, "url": "nats://127.0.0.1:1"}))
    result = system.cli("ps")
    assert result.returncode == 1
    assert f"names pid {dead.pid}, which is gone" in result.stderr
    assert "start one with `eevee up`" in result.stderr


def test_ps_without_a_configuration_looks_in_the_default_state_dir(tmp_path: Path) -> None:
    result = eevee("ps", cwd=tmp_path, env=isolated_env(tmp_path))
    assert result.returncode == 1
    assert str(tmp_path / "xdg-state" / "eevee" / "supervisor.json") in result.stderr


# -- configuration -----------------------------------------------------------------------------

BROKEN = """\
[supervisor]
ping_intervall = 1

[operators.both]
module = "operators.echo"
command = ["./bot"]

[operators.typo]
module = "operators.echo"
restart = "sometimes"
"""


def test_up_with_a_broken_configuration_starts_nothing(make_system: MakeSystem) -> None:
    system = make_system()
    system.config.write_text(BROKEN)
    started = time.monotonic()
    result = system.cli("up", timeout=20)
    assert result.returncode == 2, result
    assert time.monotonic() - started < 10
    cfg = str(system.config)
    err = result.stderr
    assert f"{cfg}: supervisor.ping_intervall: unknown key; did you mean 'ping_interval'?" in err
    assert f"{cfg}: operators.both" in err
    assert "both module and command are set" in err
    assert f"{cfg}: operators.typo.restart" in err
    assert "nothing started" in err
    assert not system.state_dir.exists(), "a broken configuration created state"
    assert result.stdout == ""


def test_up_with_a_toml_syntax_error(make_system: MakeSystem) -> None:
    system = make_system()
    system.config.write_text('prefix = "eevee"\n[supervisor\n')
    result = system.cli("up", timeout=20)
    assert result.returncode == 2
    assert f"{system.config}: line 2" in result.stderr
    assert "TOML syntax error" in result.stderr
    assert not system.state_dir.exists()


def up_fails_with_one_line(system: System, path: Path, reason: str) -> None:
    result = system.cli("up", timeout=20)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"eevee: cannot write to {path} ({reason}"), last
    assert "make it writable, or set [paths] state_dir" in last, last
    assert not system.state_file.exists()


def test_up_with_a_state_dir_that_cannot_be_created(make_system: MakeSystem) -> None:
    system = make_system().write({"bash": bash_op()})
    blocker = system.root / "a-file"  # holds for root too, unlike permission bits
    blocker.write_text("not a directory")
    system.env["XDG_STATE_HOME"] = str(blocker)
    up_fails_with_one_line(system, blocker / "eevee", "Not a directory")


def test_up_with_a_read_only_state_dir(make_system: MakeSystem) -> None:
    system = make_system().write({"bash": bash_op()})
    system.state_dir.mkdir(parents=True)
    with immutable(system.state_dir):  # read-only even for root
        up_fails_with_one_line(system, system.state_dir / "log", "Operation not permitted")


def test_up_with_a_missing_configuration_file(make_system: MakeSystem) -> None:
    system = make_system()  # no file written
    result = system.cli("up", timeout=20)
    assert result.returncode == 2
    assert f"configuration file {system.config} does not exist" in result.stderr


def test_config_check(make_system: MakeSystem) -> None:
    good = make_system("good").write({"bash": bash_op()})
    result = good.cli("config", "check")
    assert (result.returncode, result.stdout.strip()) == (0, f"{good.config}: ok")

    bad = make_system("bad")
    bad.config.write_text(BROKEN)
    result = bad.cli("config", "check")
    assert result.returncode == 2
    assert f"{bad.config}: 3 problem(s)" in result.stderr
    assert f"{bad.config}: supervisor.ping_intervall: unknown key" in result.stderr

    result = bad.cli("config", "check", "--json")
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["config"] == str(bad.config)
    wheres = [p["where"] for p in report["problems"]]
    assert f"{bad.config}: operators.typo.restart" in wheres
    assert all(set(p) == {"where", "what"} for p in report["problems"])


# -- schemas -----------------------------------------------------------------------------------


def test_schema_check_passes_on_the_checked_in_schemas(tmp_path: Path) -> None:
    result = eevee("schema", "--check", cwd=ROOT, env=isolated_env(tmp_path))
    assert result.returncode == 0, result.stderr


def test_schema_check_fails_on_stale_schemas(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    out = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", out)
    assert eevee("schema", "--check", "--out", str(out), cwd=tmp_path, env=env).returncode == 0

    ping = out / "ping.schema.json"
    schema = json.loads(ping.read_text())
    schema["title"] = "Something else"
    ping.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    (out / "pong.schema.json").unlink()
    (out / "stray.schema.json").write_text("{}\n")
    result = eevee("schema", "--check", "--out", str(out), cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert f"{out}/ping.schema.json: differs from the models" in result.stderr
    assert f"{out}/pong.schema.json: missing" in result.stderr
    assert f"{out}/stray.schema.json: no model produces it" in result.stderr
    assert "make schemas" in result.stderr

    written = eevee("schema", "--out", str(out), cwd=tmp_path, env=env)
    assert written.returncode == 0
    assert str(ping) in written.stdout.splitlines()
    (out / "stray.schema.json").unlink()
    assert eevee("schema", "--check", "--out", str(out), cwd=tmp_path, env=env).returncode == 0


# -- with a running supervisor -----------------------------------------------------------------


def test_ps_json_has_the_documented_keys(running: System) -> None:
    running.wait_op("bash", lambda s: s["state"] == "RUNNING" and s["ping_ms"] is not None)
    result = running.cli("ps", "--json")
    assert result.returncode == 0, result.stderr
    ops = json.loads(result.stdout)
    assert [op["id"] for op in ops] == ["bash"]
    (op,) = ops
    assert set(op) >= PS_KEYS, sorted(op)
    assert op["state"] == "RUNNING"
    assert psutil.Process(op["pid"]) in running.collect()
    assert isinstance(op["restarts"], int)
    assert op["uptime_s"] >= 0
    assert op["rss_bytes"] > 0
    assert op["ping_ms"] > 0


def test_ps_table(running: System) -> None:
    running.wait_state("bash", "RUNNING")
    result = running.cli("ps")
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split() == [
        "ID",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "RSS",
        "CPU%",
        "NICE",
        "PING",
    ]
    assert row.split()[:2] == ["bash", "RUNNING"]
    assert "\033[" not in result.stdout  # no colours when not a terminal


def test_ctl_with_an_unknown_operator_fails_clearly(running: System) -> None:
    result = running.cli("ctl", "restart", "unknown-id")
    assert result.returncode == 1
    assert "unknown operator 'unknown-id' (known: bash)" in result.stderr
    result = running.cli("ctl", "restart", "unknown-id", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["ok"] is False


def test_ctl_restart_stop_start(running: System) -> None:
    before = running.wait_state("bash", "RUNNING")
    result = running.cli("ctl", "restart", "bash", "--json")
    assert result.returncode == 0, result.stderr
    (op,) = json.loads(result.stdout)["operators"]
    assert op["state"] == "RUNNING"  # ctl waits for the operator to settle
    assert op["pid"] != before["pid"]
    assert op["restarts"] == before["restarts"] + 1
    old = psutil.Process(op["pid"])

    result = running.cli("ctl", "stop", "bash")
    assert result.returncode == 0, result.stderr
    assert running.op("bash")["state"] == "STOPPED"
    wait_for(lambda: not alive(old), 5, what="the stopped operator to be gone")
    result = running.cli("ctl", "reload", "bash")
    assert result.returncode == 1
    assert "bash is not running" in result.stderr

    result = running.cli("ctl", "start", "bash")
    assert result.returncode == 0, result.stderr
    assert "RUNNING" in result.stdout
    assert running.op("bash")["state"] == "RUNNING"


def test_cli_talks_to_its_own_supervisor_on_a_shared_bus(
    make_system: MakeSystem, tmp_path: Path
) -> None:
    with standalone_nats(tmp_path / "bus") as url:
        shared = {"prefix": "shared", "bus_url": url}
        alpha = make_system("alpha").write({"a": bash_op()}, supervisor={"name": "alpha"}, **shared)
        beta = make_system("beta").write({"b": bash_op()}, supervisor={"name": "beta"}, **shared)
        alpha.up("a")
        beta.up("b")
        for _ in range(3):  # each CLI asks its own supervisor first, then the others
            for system, mine, other in ((alpha, "a", "b"), (beta, "b", "a")):
                result = system.cli("ps", "--json")
                assert result.returncode == 0, result.stderr
                ops = [(op["id"], op["host"]) for op in json.loads(result.stdout)]
                names = {"a": "alpha", "b": "beta"}
                assert ops == [(mine, names[mine]), (other, names[other])]

        result = beta.cli("down")
        assert result.returncode == 0, result.stderr
        assert beta.proc is not None
        beta.proc.wait(5)
        time.sleep(0.5)
        alpha.check_alive()  # `eevee down` of beta left alpha alone
        assert alpha.op("a")["state"] == "RUNNING"
        alpha.stop()  # before the bus goes


def test_sigterm_stops_eevee_up_gracefully(make_system: MakeSystem) -> None:
    system = make_system().write({"bash": bash_op()}).up("bash")
    tree = system.collect()
    system.signal(signal.SIGTERM)
    assert system.proc is not None
    assert system.proc.wait(10) == 0
    wait_for(lambda: not [p for p in tree if alive(p)], 3, what="every process to be gone")
    assert not system.state_file.exists()
