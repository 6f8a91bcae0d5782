"""The operator runtime against a real nats-server.

The echo operator runs as a real process under the process contract (environment in, Ready,
pings, control, signals, exit codes out); hooks and helpers are checked in-process through
``Operator.serve()``. Each test has a subject prefix of its own on the shared server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pydantic import BaseModel

from eeveepy import Operator
from eeveepy.bus.client import barrier
from eeveepy.bus.names import kv_bucket_name
from eeveepy.protocol.models import (
    ChatMessage,
    ChatUser,
    Control,
    ControlAction,
    ControlResult,
    Envelope,
    OutgoingMessage,
    Ping,
    Pong,
    Ready,
)
from eeveepy.runtime.contract import EXIT_CONFIG, EXIT_UNAVAILABLE
from eeveepy.runtime.lifecycle import OperatorState
from tests.bus_fixtures import PrefixedBus
from tests.operator_procs import contract_env

WAIT = 5.0
QUIET = 0.5  # how long "nothing arrives" is watched for
ROOT = Path(__file__).resolve().parents[1]
Inbox = asyncio.Queue[Envelope[Any]]


def chat(text: str, *, private: bool = False) -> ChatMessage:
    return ChatMessage(
        platform="irc",
        network="libera",
        room="alice" if private else "#ops",
        user=ChatUser(id="alice", name="Alice"),
        text=text,
        private=private,
        message_id="m1",
    )


class Bus(PrefixedBus):
    """The test's own connection, under a prefix of its own."""

    SOURCE = "test.runtime"

    async def ctl(self, op_id: str, action: ControlAction) -> ControlResult:
        subject = self.subjects.operator_ctl(op_id)
        env = await self.io.request(subject, Control(action=action), ControlResult, timeout=WAIT)
        return env.body

    async def ping(self, op_id: str) -> str:
        env = await self.io.request(self.subjects.operator_ping(op_id), Ping(), Pong, timeout=WAIT)
        assert env.body.operator == op_id
        return env.body.state

    def env(self, op_id: str, **extra: str) -> dict[str, str]:
        """The process contract's environment for ``op_id``."""
        return contract_env(url=self.url, prefix=self.prefix, op_id=op_id, tmp=self.tmp, **extra)


@pytest_asyncio.fixture
async def bus(nats_url: str, tmp_path: Path) -> AsyncIterator[Bus]:
    b = Bus(nats_url, tmp_path)
    await b.start()
    try:
        yield b
    finally:
        await b.close()


async def get(queue: Inbox) -> Envelope[Any]:
    return await asyncio.wait_for(queue.get(), WAIT)


async def nothing(queue: Inbox) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.get(), QUIET)


# -- the echo operator as a process ---------------------------------------------------------


class Child:
    """The router-less echo operator with its stderr collected; killed when the test ends."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stderr = b""
        assert proc.stderr is not None
        self._reader = asyncio.ensure_future(self._read(proc.stderr))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.stderr += chunk

    async def wait(self) -> int:
        code = await asyncio.wait_for(self.proc.wait(), WAIT)
        await asyncio.wait_for(self._reader, WAIT)
        return code

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)


@contextlib.asynccontextmanager
async def echo_process(env: dict[str, str], *args: str) -> AsyncIterator[Child]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.operators.chat_echo",
        *args,
        env=env,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    child = Child(proc)
    try:
        yield child
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        child._reader.cancel()


@contextlib.asynccontextmanager
async def running_echo(bus: Bus, op_id: str, *args: str, **env: str) -> AsyncIterator[Child]:
    """The echo operator started and Ready (subscribed to Ready before it starts)."""
    ready = await bus.collect(bus.subjects.operator_ready(op_id), Ready)
    async with echo_process(bus.env(op_id, **env), *args) as child:
        try:
            msg = await get(ready)
        except TimeoutError:
            raise AssertionError(f"no Ready; stderr: {child.stderr.decode()}") from None
        assert msg.body.operator == op_id
        assert msg.body.pid == child.proc.pid
        assert msg.source == op_id
        yield child


async def test_echo_process_ready_ping_echo_and_sigterm(bus: Bus) -> None:
    out = await bus.collect(bus.subjects.chat_out("irc", "libera"), OutgoingMessage)
    async with running_echo(bus, "echo") as child:
        assert await bus.ping("echo") == "running"

        chat_in = bus.subjects.chat_in("irc", "libera", "#ops")
        await bus.io.publish(chat_in, chat("!echo hi"), trace="t-1")
        reply = await get(out)
        assert reply.body.text == "hi"
        assert (reply.body.target, reply.body.private, reply.body.reply_to) == ("#ops", False, "m1")
        assert reply.headers["trace"] == "t-1"
        assert reply.source == "echo"

        await bus.io.publish(bus.subjects.chat_in("irc", "libera", "alice"), chat("hello"))
        await nothing(out)

        started = time.monotonic()
        child.signal(signal.SIGTERM)
        assert await child.wait() == 0
        assert time.monotonic() - started < WAIT


async def test_echo_process_halt_buffers_and_resume_delivers(bus: Bus, tmp_path: Path) -> None:
    out = await bus.collect(bus.subjects.chat_out("irc", "libera"), OutgoingMessage)
    chat_in = bus.subjects.chat_in("irc", "libera", "#ops")
    toml = tmp_path / "echo.toml"
    toml.write_text('prefix = "!repeat "\n')
    # The command-line options of development runs override the environment.
    args = ("--id", "echo.halt", "--prefix", bus.prefix, "--settings", str(toml))
    env = {"EEVEE_OPERATOR_ID": "other", "EEVEE_SUBJECT_PREFIX": "elsewhere"}
    async with running_echo(bus, "echo.halt", *args, **env) as child:
        result = await bus.ctl("echo.halt", ControlAction.HALT)
        assert result.ok, result.message
        assert await bus.ping("echo.halt") == "halted"

        await bus.io.publish(chat_in, chat("!repeat while halted"))
        await nothing(out)

        assert (await bus.ctl("echo.halt", ControlAction.RESUME)).ok
        assert (await get(out)).body.text == "while halted"
        assert await bus.ping("echo.halt") == "running"

        assert not (await bus.ctl("echo.halt", ControlAction.RESTART)).ok  # the supervisor's
        assert (await bus.ctl("echo.halt", ControlAction.STOP)).ok
        assert await child.wait() == 0


async def test_echo_process_reloads_settings_file_on_sighup(bus: Bus, tmp_path: Path) -> None:
    settings = tmp_path / "echo.json"
    settings.write_text(json.dumps({"prefix": "!echo "}))
    out = await bus.collect(bus.subjects.chat_out("irc", "libera"), OutgoingMessage)
    chat_in = bus.subjects.chat_in("irc", "libera", "#ops")
    env = {"EEVEE_SETTINGS": '{"prefix": "!env "}', "EEVEE_SETTINGS_FILE": str(settings)}
    async with running_echo(bus, "echo.reload", **env) as child:
        await bus.io.publish(chat_in, chat("!echo from file"))  # the file wins over the env
        assert (await get(out)).body.text == "from file"

        settings.write_text(json.dumps({"prefix": "!say "}))
        child.signal(signal.SIGHUP)
        deadline = time.monotonic() + WAIT
        while True:  # the reload is asynchronous: ask until the new prefix is understood
            await bus.io.publish(chat_in, chat("!say again"))
            with contextlib.suppress(TimeoutError):
                assert (await asyncio.wait_for(out.get(), 0.2)).body.text == "again"
                break
            assert time.monotonic() < deadline, child.stderr.decode()

        settings.write_text(json.dumps({"prefix": 123}))
        result = await bus.ctl("echo.reload", ControlAction.RELOAD)
        assert not result.ok
        assert "prefix" in result.message
        while not out.empty():  # late answers of the polling above
            out.get_nowait()
        await bus.io.publish(chat_in, chat("!say still"))  # the old settings are kept
        assert (await get(out)).body.text == "still"

        child.signal(signal.SIGTERM)
        assert await child.wait() == 0
        assert b"prefix" in child.stderr


async def test_echo_process_invalid_settings_exit_78(bus: Bus) -> None:
    env = bus.env("echo.bad", EEVEE_SETTINGS=json.dumps({"prefix": ["not", "text"]}))
    async with echo_process(env) as child:
        assert await child.wait() == EXIT_CONFIG
    err = child.stderr.decode()
    assert "prefix" in err
    assert "valid string" in err


async def test_echo_process_unreachable_bus_exit_69(tmp_path: Path) -> None:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("EEVEE_")}
        env.update(EEVEE_CONNECT_TIMEOUT="1", EEVEE_CACHE_DIR=str(tmp_path / "c"))
        env["EEVEE_DATA_DIR"] = str(tmp_path / "d")
        args = ("--id", "echo", "--nats-url", f"nats://127.0.0.1:{port}")
        async with echo_process(env, *args) as child:
            assert await child.wait() == EXIT_UNAVAILABLE
    assert f"127.0.0.1:{port}" in child.stderr.decode()


# -- serve() in-process ---------------------------------------------------------------------


class Recorded(BaseModel):
    greeting: str = "hi"


async def test_serve_runs_hooks_in_order(bus: Bus) -> None:
    op = Operator(Recorded, operator_id="hooks")
    events: list[str] = []
    ready = await bus.collect(bus.subjects.operator_ready("hooks"), Ready)
    # Emptying the cache dir before a start is the supervisor's part of the process contract
    # (tests/test_process_contract.py); the runtime creates the directories.
    assert not (bus.tmp / "cache" / "hooks").exists()
    (bus.tmp / "data" / "hooks").mkdir(parents=True)
    (bus.tmp / "data" / "hooks" / "kept").write_text("x")

    @op.on_start
    async def started() -> None:
        assert op.state is OperatorState.STARTING
        assert ready.empty()
        assert op.settings.greeting == "hello"
        assert op.cache_dir.is_dir()
        assert list(op.cache_dir.iterdir()) == []
        assert (op.data_dir / "kept").exists()
        events.append("start")

    @op.on_start
    def started_too() -> None:  # sync hooks are fine
        events.append("start2")

    @op.on_halt
    def halted() -> None:
        events.append("halt")

    @op.on_resume
    def resumed() -> None:
        events.append("resume")

    @op.on_reload
    def reloaded() -> None:
        events.append("reload")

    @op.on_stop
    async def stopped() -> None:
        assert op.state is OperatorState.STOPPING
        events.append("stop")

    env = bus.env("hooks", EEVEE_SETTINGS='{"greeting": "hello"}')
    task = asyncio.create_task(op.serve(env))
    try:
        await get(ready)
        assert events == ["start", "start2"]
        assert op.state is OperatorState.RUNNING
        for action in (ControlAction.HALT, ControlAction.RESUME, ControlAction.RELOAD):
            assert (await bus.ctl("hooks", action)).ok
        assert events == ["start", "start2", "halt", "resume", "reload"]
        op.request_stop()
        assert await asyncio.wait_for(task, WAIT) == 0
        assert events[-1] == "stop"
        assert op.state in {OperatorState.STOPPED}  # (mypy narrowed it to RUNNING above)
    finally:
        task.cancel()


async def test_serve_delivers_after_start_and_replies(bus: Bus) -> None:
    op = Operator(operator_id="inproc")
    out = await bus.collect(bus.subjects.chat_out("irc", "libera"), OutgoingMessage)
    ready = await bus.collect(bus.subjects.operator_ready("inproc"), Ready)
    seen: list[str] = []
    start_done = asyncio.Event()

    @op.ipc.subscribe("chat.in.>")
    async def on_chat(env: Envelope[ChatMessage]) -> None:
        assert start_done.is_set()  # nothing is delivered before on_start has finished
        seen.append(env.body.text)
        await op.reply(env, "secret", private=True)

    @op.on_start
    async def start() -> None:
        await op.ipc.publish(bus.subjects.chat_in("irc", "libera", "#ops"), chat("early"))
        await barrier(op.ipc.nc)
        await asyncio.sleep(0.1)
        start_done.set()

    task = asyncio.create_task(op.serve(bus.env("inproc")))
    try:
        await get(ready)
        reply = await get(out)
        assert seen == ["early"]
        assert (reply.body.target, reply.body.private, reply.body.text) == ("alice", True, "secret")
        assert op.subjects.prefix == bus.prefix
        op.request_stop()
        assert await asyncio.wait_for(task, WAIT) == 0
    finally:
        task.cancel()


async def test_serve_kv_bucket(bus: Bus) -> None:
    op = Operator(operator_id="kv-test.a")
    ready = await bus.collect(bus.subjects.operator_ready("kv-test.a"), Ready)

    @op.on_start
    async def start() -> None:
        kv = await op.kv()
        await kv.put("k", b"v")
        assert (await (await op.kv()).get("k")).value == b"v"

    task = asyncio.create_task(op.serve(bus.env("kv-test.a")))
    try:
        await get(ready)
        assert kv_bucket_name("kv-test.a") == "eevee_kv_test_a"
        bucket = kv_bucket_name("kv-test.a", bus.subjects.prefix)  # the prefix's own
        assert bucket == bus.subjects.prefix.replace(".", "_") + "_kv_test_a"
        js = bus.io.nc.jetstream()
        assert (await (await js.key_value(bucket)).get("k")).value == b"v"
        await js.delete_key_value(bucket)
        op.request_stop()
        assert await asyncio.wait_for(task, WAIT) == 0
    finally:
        task.cancel()


async def test_second_stop_request_forces(bus: Bus) -> None:
    op = Operator(operator_id="stuck")
    op.stop_timeout = 60.0
    ready = await bus.collect(bus.subjects.operator_ready("stuck"), Ready)
    stopping = asyncio.Event()

    @op.on_stop
    async def hang() -> None:
        stopping.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(op.serve(bus.env("stuck")))
    try:
        await get(ready)
        op.request_stop()
        await asyncio.wait_for(stopping.wait(), WAIT)
        op.request_stop()
        assert await asyncio.wait_for(task, WAIT) == 1
    finally:
        task.cancel()


async def test_serve_config_problems_exit_78(bus: Bus) -> None:
    assert await Operator(Recorded).serve(bus.env("x", EEVEE_OPERATOR_ID="")) == EXIT_CONFIG
    env = bus.env("x", EEVEE_NATS_URL="", EEVEE_SUBJECT_PREFIX="bad prefix")
    assert await Operator(Recorded).serve(env) == EXIT_CONFIG
    bad = bus.env("x", EEVEE_SETTINGS='{"greeting": 5}')
    assert await Operator(Recorded).serve(bad) == EXIT_CONFIG
    assert await Operator(Recorded).serve(bus.env("x", EEVEE_SETTINGS="{nope")) == EXIT_CONFIG


async def test_directories_are_made_with_their_parents_and_a_file_in_the_way_is_a_config_error(
    bus: Bus,
) -> None:
    blocker = bus.tmp / "a file"
    blocker.write_text("x")
    env = bus.env("dirs", EEVEE_DATA_DIR=str(blocker))
    assert await Operator(Recorded).serve(env) == EXIT_CONFIG
    env = bus.env("dirs", EEVEE_DATA_DIR=str(blocker / "under"))
    assert await Operator(Recorded).serve(env) == EXIT_CONFIG
    deep = bus.tmp / "deep" / "er" / "data"
    op = Operator(Recorded)
    seen: list[bool] = []

    @op.on_start
    def started() -> None:
        seen.append(op.data_dir.is_dir() and op.cache_dir.is_dir())
        op.request_stop()

    assert await op.serve(bus.env("dirs", EEVEE_DATA_DIR=str(deep))) == 0
    assert seen == [True]
    assert deep.stat().st_mode & 0o777 == 0o700


async def test_failing_on_start_exits_1_without_ready(bus: Bus) -> None:
    op = Operator(operator_id="broken")
    ready = await bus.collect(bus.subjects.operator_ready("broken"), Ready)
    stopped: list[str] = []

    @op.on_start
    def boom() -> None:
        raise RuntimeError("no database")

    @op.on_stop
    def never() -> None:  # on_stop pairs with a finished on_start
        stopped.append("stop")

    assert await asyncio.wait_for(op.serve(bus.env("broken")), WAIT) == 1
    await nothing(ready)
    assert stopped == []
