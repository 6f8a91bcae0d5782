"""The fork server: children run modules as __main__ with their own env, output and exit code."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
import structlog

from eeveepy.config import OperatorConfig
from eeveepy.errors import ForkServerError
from eeveepy.supervisor.forkserver import ForkServer
from eeveepy.supervisor.prefork import prefork
from eeveepy.supervisor.spawn import Launcher


@pytest.fixture
async def server() -> AsyncIterator[ForkServer]:
    fs = ForkServer()
    await fs.start()
    try:
        yield fs
    finally:
        await fs.stop()


def write_module(root: Path, name: str, body: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.py").write_text(body, encoding="utf-8")


async def output_of(server: ForkServer, module: str, mods: Path) -> str:
    """What a child of ``module`` (found in ``mods``) printed; it must exit 0."""
    child = await server.spawn(module, [], {"PYTHONPATH": str(mods)})
    assert child.stdout is not None
    out = await asyncio.wait_for(child.stdout.read(), 10)
    assert await asyncio.wait_for(child.wait(), 10) == 0
    return out.decode()


async def test_child_runs_module_with_env_path_output_and_exit_code(
    server: ForkServer, tmp_path: Path
) -> None:
    write_module(
        tmp_path / "mods",
        "fs_probe",
        "import os, sys\n"
        "print('out', os.environ['PROBE'], __name__, flush=True)\n"
        "print('err', os.getpid(), file=sys.stderr, flush=True)\n"
        "sys.exit(7)\n",
    )
    env = {"PROBE": "yes", "PYTHONPATH": str(tmp_path / "mods")}
    child = await server.spawn("fs_probe", [], env, cwd=str(tmp_path))
    assert child.stdout is not None
    assert child.stderr is not None
    out = await asyncio.wait_for(child.stdout.read(), 10)
    err = await asyncio.wait_for(child.stderr.read(), 10)
    assert await asyncio.wait_for(child.wait(), 10) == 7
    assert out.decode() == "out yes __main__\n"
    assert err.decode() == f"err {child.pid}\n"
    assert child.pid != os.getpid()


async def test_the_server_leaves_out_what_operators_do_not_share_but_a_child_may_import_it(
    server: ForkServer, tmp_path: Path
) -> None:
    """The server holds neither aiohttp nor Twisted (nats-py's websockets and structlog's
    Twisted support are not used), a child still imports them (the Matrix connector does),
    and what it preloaded is frozen out of the collector's sight."""
    write_module(
        tmp_path / "mods",
        "fs_unused",
        "import gc, sys\n"
        "print(sorted(m for m in ('aiohttp', 'twisted') if sys.modules.get(m)), flush=True)\n"
        "import aiohttp\n"
        "print(aiohttp.__name__, gc.isenabled(), gc.get_freeze_count() > 10000, flush=True)\n",
    )
    out = await output_of(server, "fs_unused", tmp_path / "mods")
    assert out == "[]\naiohttp True True\n"


async def test_killed_child_reports_the_signal(server: ForkServer, tmp_path: Path) -> None:
    write_module(tmp_path / "mods", "fs_sleep", "import time\ntime.sleep(60)\n")
    env = {"PYTHONPATH": str(tmp_path / "mods")}
    child = await server.spawn("fs_sleep", [], env)
    await asyncio.sleep(0.2)
    os.killpg(child.pid, signal.SIGKILL)  # each child leads its own process group
    assert await asyncio.wait_for(child.wait(), 10) == -signal.SIGKILL


async def test_a_missing_module_is_one_line_as_python_m_says_it(server: ForkServer) -> None:
    child = await server.spawn("no_such_module_anywhere", [], {})
    assert child.stderr is not None
    err = await asyncio.wait_for(child.stderr.read(), 10)
    assert await asyncio.wait_for(child.wait(), 10) == 1
    assert err.decode() == f"{sys.executable}: No module named no_such_module_anywhere\n"


async def test_a_child_runs_atexit_and_is_titled_after_its_operator(
    server: ForkServer, tmp_path: Path
) -> None:
    write_module(
        tmp_path / "mods",
        "fs_atexit",
        "import atexit, sys, time\n"
        "atexit.register(lambda: print('at exit', flush=True))\n"
        "print('ready', flush=True)\n"
        "time.sleep(0.5)\n"
        "sys.exit(3)\n",
    )
    env = {"PYTHONPATH": str(tmp_path / "mods"), "EEVEE_OPERATOR_ID": "irc.libera"}
    child = await server.spawn("fs_atexit", [], env)
    assert child.stdout is not None
    assert await asyncio.wait_for(child.stdout.readline(), 10) == b"ready\n"
    title = " ".join(psutil.Process(child.pid).cmdline()).strip()
    assert title == "eevee: irc.libera"
    assert await asyncio.wait_for(child.stdout.read(), 10) == b"at exit\n"
    assert await asyncio.wait_for(child.wait(), 10) == 3


async def test_the_fork_server_is_renewed_when_where_it_imports_from_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fork server's sys.path starts with its working directory (`python -m`): a change
    # there stands for a package installed since it started.
    work = tmp_path / "work"
    work.mkdir()
    write_module(tmp_path / "mods", "fs_wait", "import time\ntime.sleep(60)\n")
    monkeypatch.chdir(work)
    launcher = Launcher(forkserver=True, log=structlog.get_logger("tests"))
    cfg = OperatorConfig(id="waiter", module="fs_wait", env={"PYTHONPATH": str(tmp_path / "mods")})
    log = structlog.get_logger("tests")
    try:
        first = await launcher.spawn(cfg, {}, tmp_path / "cache", log)
        old_server = psutil.Process(first.pid).ppid()
        again = await launcher.spawn(cfg, {}, tmp_path / "cache", log)
        assert psutil.Process(again.pid).ppid() == old_server  # nothing changed: the same one

        (work / "new_package.pth").write_text("")
        renewed = await launcher.spawn(cfg, {}, tmp_path / "cache", log)
        assert psutil.Process(renewed.pid).ppid() != old_server
        assert psutil.Process(first.pid).is_running()  # the old one kept its children

        for child in (first, again):
            os.killpg(child.pid, signal.SIGKILL)
            await asyncio.wait_for(child.wait(), 10)
        last = await launcher.spawn(cfg, {}, tmp_path / "cache", log)
        assert psutil.Process(last.pid).ppid() == psutil.Process(renewed.pid).ppid()
        # With no children left, the old server was stopped.
        gone = not psutil.pid_exists(old_server) or psutil.Process(old_server).status() == (
            psutil.STATUS_ZOMBIE
        )
        assert gone
    finally:
        await launcher.stop()


async def test_children_die_with_the_server(tmp_path: Path) -> None:
    write_module(tmp_path / "mods", "fs_sleep2", "import time\ntime.sleep(60)\n")
    fs = ForkServer()
    await fs.start()
    child = await fs.spawn("fs_sleep2", [], {"PYTHONPATH": str(tmp_path / "mods")})
    await fs.stop()
    assert await asyncio.wait_for(child.wait(), 5) == -signal.SIGKILL

    def gone() -> bool:
        # Orphans are reparented to PID 1, which here may not reap them: a zombie is gone.
        try:
            return psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    for _ in range(100):
        if gone():
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"child {child.pid} outlived the fork server")
    with pytest.raises(ForkServerError):
        await fs.spawn("fs_sleep2", [], {})


async def test_a_server_forked_from_the_supervisor_is_taken_over(tmp_path: Path) -> None:
    """``eevee up`` forks its fork server before anything runs (it shares the supervisor's
    pages): the launcher takes it over, its children run modules found in their working
    directory as under a fresh server, and stopping it reaps it."""
    forked = prefork()
    assert forked is not None
    server = ForkServer()
    await server.start(forked=forked)
    try:
        assert "eevee: fork server" in " ".join(psutil.Process(forked.process.pid).cmdline())
        write_module(tmp_path, "fs_here", "import os\nprint('here', os.environ['PROBE'])\n")
        child = await server.spawn("fs_here", [], {"PROBE": "yes"}, cwd=str(tmp_path))
        assert child.stdout is not None
        out = await asyncio.wait_for(child.stdout.read(), 10)
        assert child.stderr is not None
        err = await asyncio.wait_for(child.stderr.read(), 10)
        assert (await asyncio.wait_for(child.wait(), 10), out.decode(), err.decode()) == (
            0,
            "here yes\n",
            "",
        )
    finally:
        await server.stop()
    assert forked.process.poll() is not None
    unused = prefork()  # one nobody takes over ends with close()
    assert unused is not None
    unused.close()
    assert unused.process.returncode is not None


@pytest.mark.parametrize("on_fd2", [True, False], ids=["stderr-fd2", "stderr-replaced"])
async def test_a_pre_forked_servers_child_logs_as_its_operator_on_its_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_fd2: bool
) -> None:
    """``eevee up`` configures the operators' logging before it forks the server when its
    ``sys.stderr`` writes to fd 2 (the server's own work after the fork wrote to pages the two
    shared); when something else stands in for it (a test runner's capture), the server
    configures it after the fork, on its fd 2. Either way a child's events go to its stderr."""
    saved = structlog.get_config()
    structlog.reset_defaults()  # so that is_configured() tells who configured it
    fd2 = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
    monkeypatch.setattr(sys, "stderr", fd2 if on_fd2 else io.StringIO())
    forked = prefork()
    assert forked is not None
    assert structlog.is_configured() is on_fd2  # configured here, or left to the server
    server = ForkServer()
    try:
        await server.start(forked=forked)
        write_module(
            tmp_path,
            "fs_prelog",
            "import structlog\nstructlog.get_logger('probe').info('hello', n=2)\n",
        )
        env = {"EEVEE_OPERATOR_ID": "echo.two", "EEVEE_SUPERVISOR": "sup"}
        child = await server.spawn("fs_prelog", [], env, cwd=str(tmp_path))
        assert child.stderr is not None
        err = await asyncio.wait_for(child.stderr.read(), 10)
        assert await asyncio.wait_for(child.wait(), 10) == 0
        event = json.loads(err)
        assert (event["event"], event["n"], event["operator"]) == ("hello", 2, "echo.two")
    finally:
        await server.stop()
        structlog.reset_defaults()
        structlog.configure(**saved)


async def test_a_child_under_a_supervisor_logs_as_its_operator_through_the_servers_setup(
    server: ForkServer, tmp_path: Path
) -> None:
    # The server configured structlog as an operator's before it forked: the child names its
    # operator in every event; a child that is no operator under a supervisor finds structlog
    # unconfigured, as a fresh interpreter would.
    write_module(
        tmp_path / "mods",
        "fs_log",
        "import structlog\n"
        "print(structlog.is_configured(), flush=True)\n"
        "if structlog.is_configured():\n"
        "    structlog.get_logger('probe').info('hello', n=1)\n",
    )
    mods = {"PYTHONPATH": str(tmp_path / "mods")}
    env = {**mods, "EEVEE_OPERATOR_ID": "echo.one", "EEVEE_SUPERVISOR": "sup"}
    child = await server.spawn("fs_log", [], env)
    assert child.stdout is not None
    assert child.stderr is not None
    out = await asyncio.wait_for(child.stdout.read(), 10)
    err = await asyncio.wait_for(child.stderr.read(), 10)
    assert await asyncio.wait_for(child.wait(), 10) == 0
    assert out == b"True\n"
    event = json.loads(err)
    assert (event["event"], event["n"], event["logger"]) == ("hello", 1, "probe")
    assert (event["operator"], event["level"]) == ("echo.one", "info")
    for other in (mods, {**mods, "EEVEE_OPERATOR_ID": "echo.one"}):
        child = await server.spawn("fs_log", [], other)
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.read(), 10) == b"False\n"
        assert await asyncio.wait_for(child.wait(), 10) == 0


async def test_a_child_runs_its_own_event_loop_after_the_servers_rehearsal(
    server: ForkServer, tmp_path: Path
) -> None:
    # The server ran a loop of the operators' kind before it forked (rehearse_loop): nothing
    # of it is left to a child, which runs a loop of its own, signals and all.
    write_module(
        tmp_path / "mods",
        "fs_loop",
        "import asyncio, os, signal, threading\n"
        "from eeveepy.aio import loop_factory, run\n"
        "print(asyncio._get_running_loop(), threading.active_count(), flush=True)\n"
        "async def main():\n"
        "    got = asyncio.Event()\n"
        "    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, got.set)\n"
        "    os.kill(os.getpid(), signal.SIGUSR1)\n"
        "    await asyncio.wait_for(got.wait(), 5)\n"
        "    return type(asyncio.get_running_loop()).__module__\n"
        "print(run(main(), loop_factory()), flush=True)\n",
    )
    out = await output_of(server, "fs_loop", tmp_path / "mods")
    assert out.splitlines() == ["None 1", "uvloop"]


BIG = "x" * (4 * 1024 * 1024)  # more than the socket between supervisor and server holds


async def test_a_request_the_socket_cannot_hold_waits_without_blocking_the_event_loop(
    server: ForkServer, tmp_path: Path
) -> None:
    """200 starts at once fill the socket faster than the server forks: a blocking send would
    stop the supervisor's pings and control requests until the server read on."""
    import threading

    write_module(tmp_path / "mods", "fs_big", "import os\nprint(len(os.environ['BIG']))\n")
    assert server._proc is not None
    pid = server._proc.pid
    os.kill(pid, signal.SIGSTOP)
    resumed = threading.Event()

    def resume() -> None:  # a blocked event loop cannot do this: a thread does, later
        resumed.set()
        os.kill(pid, signal.SIGCONT)

    timer = threading.Timer(3.0, resume)
    timer.start()
    try:
        env = {"BIG": BIG, "PYTHONPATH": str(tmp_path / "mods")}
        spawning = asyncio.ensure_future(server.spawn("fs_big", [], env))
        await asyncio.sleep(0.2)
        assert not resumed.is_set(), "the event loop was blocked until the server read"
        assert not spawning.done()
        resume()
        child = await asyncio.wait_for(spawning, 20)
        assert child.stdout is not None
        out = await asyncio.wait_for(child.stdout.read(), 10)
        assert await asyncio.wait_for(child.wait(), 10) == 0
        assert out.decode() == f"{len(BIG)}\n"
    finally:
        timer.cancel()
        os.kill(pid, signal.SIGCONT)


async def test_a_server_that_stops_reading_mid_request_is_given_up_on(
    server: ForkServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("eeveepy.supervisor.forkserver.SEND_TIMEOUT", 0.5)
    assert server._proc is not None
    os.kill(server._proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(ForkServerError, match="cannot reach the fork server"):
            await server.spawn("fs_none", [], {"BIG": BIG})
        for _ in range(100):  # killed: half a request on the socket cannot be taken back
            if not server.running:
                break
            await asyncio.sleep(0.05)
        assert not server.running
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server._proc.pid, signal.SIGCONT)
