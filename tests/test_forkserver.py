"""The fork server: children run modules as __main__ with their own env, output and exit code."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from eeveepy.errors import ForkServerError
from eeveepy.supervisor.forkserver import ForkServer


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


async def test_killed_child_reports_the_signal(server: ForkServer, tmp_path: Path) -> None:
    write_module(tmp_path / "mods", "fs_sleep", "import time\ntime.sleep(60)\n")
    env = {"PYTHONPATH": str(tmp_path / "mods")}
    child = await server.spawn("fs_sleep", [], env)
    await asyncio.sleep(0.2)
    os.killpg(child.pid, signal.SIGKILL)  # each child leads its own process group
    assert await asyncio.wait_for(child.wait(), 10) == -signal.SIGKILL


async def test_import_error_is_reported_by_the_child(server: ForkServer) -> None:
    child = await server.spawn("no_such_module_anywhere", [], {})
    assert child.stderr is not None
    err = await asyncio.wait_for(child.stderr.read(), 10)
    assert await asyncio.wait_for(child.wait(), 10) == 1
    assert b"No module named" in err


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
