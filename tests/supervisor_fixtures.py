"""Running whole systems in tests: ``eevee up`` as a subprocess, isolated under a temp dir.

A :class:`System` owns one directory: its ``eevee.toml``, its XDG state/cache/data/config
directories (so the CLI run with the same environment finds the same supervisor through the
state file) and the supervisor's log. :meth:`System.stop` always leaves nothing behind: it
runs ``eevee down``, then SIGTERM/SIGKILLs the supervisor and every process ever seen in its
tree (collected with psutil while it ran).

Status is read the way ``eevee ps --json`` reads it (a request to the supervisor named in the
state file), but in this process, so polling costs milliseconds instead of an interpreter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

import nats
import psutil
import pytest

from eeveepy.bus.ipc import Ipc
from eeveepy.bus.natsserver import EmbeddedNats
from eeveepy.protocol.models import Ping, SupervisorStatus
from eeveepy.protocol.subjects import Subjects
from eeveepy.supervisor.core import SUPERVISOR_HEADER

T = TypeVar("T")

EEVEE = Path(sys.executable).parent / "eevee"
"""The ``eevee`` console script of the environment running the tests."""
ROOT = Path(__file__).resolve().parents[1]
OPERATORS = Path(__file__).resolve().parent / "operators"
BASH_OPERATOR = OPERATORS / "bash_operator.sh"
HUNG_OPERATOR = OPERATORS / "hung_operator.sh"
CRASH_OPERATOR = OPERATORS / "crash_operator.sh"
HOOK_OPERATOR = OPERATORS / "hook_operator.py"

FAST: dict[str, Any] = {
    "ping_interval": 0.3,
    "ping_timeout": 0.3,
    "backoff_initial": 0.1,
    "backoff_max": 0.5,
    "start_timeout": 5,
    "stop_timeout": 2,
    "lease_ttl": 2,
    "healthy_after": 1,
    "shutdown_timeout": 8,
}
"""Short timings for every test configuration (``[supervisor]`` defaults)."""


def bash_op(script: Path = BASH_OPERATOR, **extra: Any) -> dict[str, Any]:
    """An ``[operators.<id>]`` table running a bash script (which also subscribes to
    ``{p}.test.bash.<id>``: a subject of its own, allowed as an extra subject)."""
    return {"command": ["bash", str(script)], "subscribe": ["test.bash.>"], **extra}


def python_op(script: Path, **extra: Any) -> dict[str, Any]:
    """An ``[operators.<id>]`` table running a Python script with the tests' interpreter."""
    return {"command": [sys.executable, str(script)], **extra}


def hook_op(record: Path, **settings: Any) -> dict[str, Any]:
    """The hook-recording Python operator, writing to ``record``."""
    return python_op(HOOK_OPERATOR, settings={"record": str(record), **settings})


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    *,
    what: str = "the condition",
    interval: float = 0.05,
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned); AssertionError at the
    deadline, naming ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}: {value!r}")
        time.sleep(interval)


def alive(proc: psutil.Process) -> bool:
    """The process exists and is not a zombie (psutil's is_running also guards pid reuse)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def operator_processes(
    op_id: str, roots: Iterable[psutil.Process], extra: Iterable[psutil.Process] = ()
) -> list[psutil.Process]:
    """Live operator processes of ``op_id`` (by their environment) below ``roots`` or among
    ``extra``; not their own children (such as the bash operator's ``$(date)``)."""
    found: dict[int, psutil.Process] = {}
    candidates = list(extra)
    for root in roots:
        with contextlib.suppress(psutil.Error):
            candidates += root.children(recursive=True)
    for proc in candidates:
        try:
            if proc.environ().get("EEVEE_OPERATOR_ID") == op_id and alive(proc):
                found[proc.pid] = proc
        except psutil.Error:
            continue
    tops = []
    for proc in found.values():
        with contextlib.suppress(psutil.Error):
            if proc.ppid() not in found:
                tops.append(proc)
    return tops


@contextlib.contextmanager
def immutable(path: Path, *, recursive: bool = False) -> Iterator[None]:
    """``chattr +i path`` (even root cannot create files in it; ``recursive``: nor write to
    any file below it), undone on exit. Skips the test where chattr cannot do that."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed: cannot make a directory read-only for root")
    flag = ["-R"] if recursive else []
    done = subprocess.run(["chattr", *flag, "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(["chattr", *flag, "-i", str(path)], capture_output=True, check=False)
        pytest.skip(
            f"chattr +i is not supported here (filesystem or privileges): {done.stderr.strip()}"
        )
    try:
        yield
    finally:
        subprocess.run(["chattr", *flag, "-i", str(path)], check=True)


# -- an event loop for the bus, on its own thread -----------------------------------------------

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def run_async(coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
    """Run ``coro`` on a private event loop thread (never disturbing pytest-asyncio's loops)."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="test-bus", daemon=True).start()
    return asyncio.run_coroutine_threadsafe(coro, _loop).result(timeout)


async def _query_status(state: Mapping[str, Any]) -> SupervisorStatus:
    nc = await nats.connect(
        state["url"].split(","),  # (a cluster's seeds)
        user=state.get("user"),
        password=state.get("password"),
        name="tests",
        connect_timeout=2,
        allow_reconnect=False,
    )
    try:
        ipc = Ipc(Subjects(state.get("prefix") or "eevee"), "tests")
        await ipc.attach(nc)
        env = await ipc.request(
            ipc.subjects.supervisor("status"),
            Ping(),
            SupervisorStatus,
            timeout=2,
            headers={SUPERVISOR_HEADER: state["supervisor"]},
        )
        await ipc.detach()
        return env.body
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


@contextlib.contextmanager
def standalone_nats(store_dir: Path) -> Iterator[str]:
    """An embedded nats-server without users (JetStream on), for several supervisors."""
    server = EmbeddedNats(store_dir=store_dir)
    run_async(server.start())
    try:
        yield server.url
    finally:
        run_async(server.stop())


# -- configurations -----------------------------------------------------------------------------


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # JSON string escapes are valid TOML basic strings
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def render_config(
    operators: Mapping[str, Mapping[str, Any]],
    *,
    supervisor: Mapping[str, Any] | None = None,
    bus_url: str | None = None,
    prefix: str | None = None,
    bus: Mapping[str, Any] | None = None,
) -> str:
    """An ``eevee.toml`` with :data:`FAST` timings (``supervisor`` overrides them); ``bus``
    holds more ``[bus]`` keys."""
    lines = []
    if prefix is not None:
        lines.append(f"prefix = {_toml(prefix)}")
    if bus_url is not None or bus:
        lines.append("[bus]")
        lines += [f"url = {_toml(bus_url)}"] if bus_url is not None else []
        lines += [f"{k} = {_toml(v)}" for k, v in (bus or {}).items()]
    lines.append("[supervisor]")
    lines += [f"{k} = {_toml(v)}" for k, v in {**FAST, **(supervisor or {})}.items()]
    for op_id, table in operators.items():
        lines.append(f"[operators.{json.dumps(op_id)}]")
        lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def isolated_env(root: Path) -> dict[str, str]:
    """This environment with XDG directories of its own under ``root`` and no EEVEE_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EEVEE_")}
    for name in ("STATE", "CACHE", "DATA", "CONFIG"):
        env[f"XDG_{name}_HOME"] = str(root / f"xdg-{name.lower()}")
    env["PYTHONUNBUFFERED"] = "1"
    return env


# -- a system -------------------------------------------------------------------------------------


class System:
    """One ``eevee up`` (and its CLI) in a directory of its own."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.config = root / "eevee.toml"
        self.env = isolated_env(root)
        self.log_path = root / "up.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: dict[int, psutil.Process] = {}
        self._log: IO[bytes] | None = None

    # -- paths and configuration --

    @property
    def state_dir(self) -> Path:
        """The supervisor's state directory (``$XDG_STATE_HOME/eevee``)."""
        return self.root / "xdg-state" / "eevee"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "supervisor.json"

    def write(self, operators: Mapping[str, Mapping[str, Any]], **kwargs: Any) -> System:
        """Write the configuration (see :func:`render_config`)."""
        self.config.write_text(render_config(operators, **kwargs), encoding="utf-8")
        return self

    def log(self) -> str:
        """The supervisor's output so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    # -- running --

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the system was not started"
        return self.proc.pid

    @property
    def process(self) -> psutil.Process:
        return self.seen[self.pid]

    def up(self, *running: str, timeout: float = 20.0) -> System:
        """Start ``eevee up``; wait until it answers and the ``running`` operators are RUNNING."""
        assert self.proc is None, "already started"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(EEVEE), "-c", str(self.config), "up"],
            env=self.env,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.seen[self.proc.pid] = psutil.Process(self.proc.pid)
        wait_for(self._answers, timeout, what="the supervisor to answer")
        for op_id in running:
            self.wait_state(op_id, "RUNNING", timeout=timeout)
        self.collect()
        return self

    def _answers(self) -> bool:
        self.check_alive()
        return self.status() is not None

    def check_alive(self) -> None:
        """Fail at once (with its log) when the supervisor has exited."""
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None:
            raise AssertionError(f"eevee up exited with code {code}:\n{self.log()[-4000:]}")

    def collect(self) -> list[psutil.Process]:
        """Remember the supervisor's whole process tree now (so stop() can clean up)."""
        root = self.seen[self.pid]
        procs = [root]
        with contextlib.suppress(psutil.Error):
            procs += root.children(recursive=True)
        for proc in procs:
            self.seen.setdefault(proc.pid, proc)
        return procs

    def cli(
        self, *args: str, timeout: float = 30.0, config: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``eevee [-c CONFIG] ARGS`` with this system's environment (``input`` piped in)."""
        argv = [str(EEVEE), *(["-c", str(self.config)] if config else []), *args]
        return subprocess.run(
            argv,
            input=input,
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def status(self) -> dict[str, dict[str, Any]] | None:
        """Operator statuses by id as ``eevee ps --json`` has them; None when nobody answers."""
        try:
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
            status = run_async(_query_status(state), timeout=5)
        except Exception:
            return None
        return {op.id: op.model_dump(mode="json") for op in status.operators}

    def op(self, op_id: str) -> dict[str, Any]:
        """One operator's status (the supervisor must answer)."""
        status = wait_for(self.status, 5, what="a status reply")
        assert op_id in status, f"{op_id} not in {sorted(status)}"
        return status[op_id]

    def wait_op(
        self,
        op_id: str,
        predicate: Callable[[dict[str, Any]], Any],
        *,
        timeout: float = 10.0,
        what: str = "",
    ) -> dict[str, Any]:
        """Wait until ``predicate`` holds for the operator's status; return that status."""
        last: dict[str, Any] = {}

        def check() -> dict[str, Any] | None:
            nonlocal last
            self.check_alive()
            status = self.status() or {}
            last = status.get(op_id, {})
            return last if last and predicate(last) else None

        try:
            return wait_for(check, timeout, what=what or f"{op_id} to change")
        except AssertionError:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what or op_id}; last status: {last}"
                f"\n--- log ---\n{self.log()[-3000:]}"
            ) from None

    def wait_state(self, op_id: str, *states: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until the operator is in one of ``states``."""
        return self.wait_op(
            op_id, lambda s: s["state"] in states, timeout=timeout, what=f"{op_id} in {states}"
        )

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the supervisor."""
        os.kill(self.pid, sig)

    def stop(self) -> None:
        """Stop everything, whatever state it is in: `eevee down`, then signals. Never raises."""
        if self.proc is None:
            return
        try:
            with contextlib.suppress(Exception):
                self.collect()
            if self.proc.poll() is None:
                with contextlib.suppress(Exception):
                    self.cli("down", "--timeout", "10", timeout=15)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(1)
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                if self.proc.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(wait)
            for proc in self.seen.values():
                if alive(proc):
                    with contextlib.suppress(psutil.Error):
                        proc.kill()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None


@contextlib.contextmanager
def system_factory(root: Path) -> Iterator[Callable[..., System]]:
    """A factory of systems under ``root`` (``make(name)``); on exit every one is stopped."""
    systems: list[System] = []

    def make(name: str = "sys") -> System:
        system = System(root / name)
        systems.append(system)
        return system

    try:
        yield make
    finally:
        for system in reversed(systems):
            system.stop()
