"""No traceback ever reaches a user of ``eevee``: every command given bad arguments says what
is wrong on one line with a non-zero status, and every command whose reader goes away (its
output piped into a closed pipe, as ``eevee logs | head`` does) ends quietly.

The commands run as ``python -m eeveepy.cli.main`` (the bad-argument cases need no running
system) and as the ``eevee`` script against one running system (the closed-pipe cases).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from supervisor_fixtures import System, bash_op, isolated_env, run_async

CLI = [sys.executable, "-m", "eeveepy.cli.main"]

BAD_ARGUMENTS: list[tuple[str, ...]] = [
    ("frobnicate",),
    ("up", "--log-level", "loud"),
    ("down", "--timeout", "soon"),
    ("down", "--timeout", "-1"),
    ("ps", "--bogus"),
    ("ctl", "explode", "echo"),
    ("ctl", "start"),
    ("ctl", "start", "echo", "--timeout", "0"),
    ("reload", "--timeout", "nan"),
    ("reload", "extra"),
    ("logs", "-n", "-5"),
    ("logs", "--lines", "many"),
    ("logs", "--level", "loud"),
    ("logs", "--since", "yesterday"),
    ("chat", "--timeout", "-1"),
    ("config",),
    ("config", "check", "--bogus"),
    ("schema", "--out", "FILE"),
    ("pub", "bad subject", "x"),
    ("pub", "a.>", "x"),
    ("pub", "a..b", "x"),
    ("sub", "a..b"),
    ("sub", "a.>.b"),
    ("sub", "chat.>", "--count", "-1"),
    ("new",),
    ("new", "operator", "Not A Name"),
    ("-c", "/nonexistent/eevee.toml", "ps"),
]


def test_bad_arguments_get_a_one_line_error(tmp_path: Path) -> None:
    afile = tmp_path / "a-file"
    afile.write_text("not a directory\n")
    env = isolated_env(tmp_path)
    # All at once: each is an interpreter start, and they are independent.
    procs = {
        args: subprocess.Popen(
            [*CLI, *(str(afile) if a == "FILE" else a for a in args)],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in BAD_ARGUMENTS
    }
    wrong = []
    for args, proc in procs.items():
        _, err = proc.communicate(timeout=60)
        lines = err.strip().splitlines()
        if (
            proc.returncode == 0
            or "Traceback" in err
            or len(lines) != (2 if args[0] == "-c" else 1)  # the file, then where it is wrong
            or not lines[0].startswith("eevee")
        ):
            wrong.append(f"eevee {' '.join(args)}: exit {proc.returncode}, stderr {err!r}")
    assert not wrong, "\n".join(wrong)


# -- a closed pipe --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A system with some log history (the bash operator's lines, the supervisor's), and a
    router and ping for ``eevee chat``."""
    system = System(tmp_path_factory.mktemp("robust") / "sys").write(
        {
            "bash": bash_op(),
            "router": {"module": "operators.router"},
            "ping": {"module": "operators.ping"},
        }
    )
    try:
        yield system.up("bash", "router", "ping")
    finally:
        system.stop()


def into_closed_pipe(
    system: System, *args: str, feed: list[str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run ``eevee ARGS`` with stdout a pipe whose reader has gone; ``feed`` publishes
    messages (``eevee pub``) until the command ends, for commands that wait for some."""
    read, write = os.pipe()
    os.close(read)
    with tempfile.TemporaryFile() as lines:
        lines.write(stdin.encode())
        lines.seek(0)
        try:
            proc = subprocess.Popen(
                [*CLI, "-c", str(system.config), *args],
                cwd=system.root,
                env=system.env,
                stdin=lines,
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
            )
        finally:
            os.close(write)
    deadline = time.monotonic() + 30
    while feed and proc.poll() is None and time.monotonic() < deadline:
        system.cli("pub", *feed)
        time.sleep(0.2)
    try:
        _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"eevee {' '.join(args)} did not end on a closed pipe") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


@pytest.mark.parametrize(
    "args",
    [
        ("ps",),
        ("ps", "--json"),
        ("logs",),
        ("logs", "--json"),
        ("logs", "-f"),
        ("ctl", "restart", "bash", "--json"),
        ("config", "check", "--static"),
        ("schema", "--out", "-"),
        ("--help",),
    ],
    ids=" ".join,
)
def test_a_closed_pipe_ends_quietly(running: System, args: tuple[str, ...]) -> None:
    result = into_closed_pipe(running, *args)
    assert result.stderr == "", result.stderr
    assert result.returncode == 0, result


def test_chat_into_a_closed_pipe_ends_quietly(running: System) -> None:
    result = into_closed_pipe(running, "chat", stdin="!ping\n!ping\n")
    assert result.stderr == "", result.stderr
    assert result.returncode == 0


def test_sub_into_a_closed_pipe_ends_quietly(running: System) -> None:
    result = into_closed_pipe(running, "sub", "test.>", feed=["test.x", "hello"])
    assert result.stderr == "", result.stderr
    assert result.returncode == 0


async def _burst(state: dict[str, Any], subject: str, n: int) -> None:
    """Publish ``n`` messages on ``subject`` in one go, with the CLI's credentials."""
    nc = await nats.connect(
        state["url"], user=state.get("user"), password=state.get("password"), connect_timeout=2
    )
    try:
        for _ in range(n):
            await nc.publish(subject, b"m")
        await nc.flush()
    finally:
        await nc.close()


def test_sub_count_prints_exactly_that_many(running: System) -> None:
    state = json.loads(running.state_file.read_text())
    proc = subprocess.Popen(
        [*CLI, "-c", str(running.config), "sub", "burst.>", "--count", "1"],
        cwd=running.root,
        env=running.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            # Many at once: more are delivered while the first is printed.
            run_async(_burst(state, "eevee.burst.x", 50))
            time.sleep(0.1)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.splitlines() == ["eevee.burst.x  m"], out
