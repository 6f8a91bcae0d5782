"""The broker-enforced sandbox, attacked with an operator's own credentials.

One real ``eevee up`` for the module (embedded nats-server; router, echo, admin and the
console connector, the router's admins being everyone on the console). Each attack of
issue 13 is replayed with the credentials the supervisor gave ``echo`` or the console
connector, which run compromised (tests/operators/leaky_operator.py hands them out): the server
refuses it (the client sees a permissions violation) and a CLI watcher (all permissions)
never sees the message. The legitimate twin of each attack succeeds on the same system, so
the tests can tell a refusal from a message that was never going to arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import psutil
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import StreamConfig
from supervisor_fixtures import System, system_factory, wait_for

from eeveepy.bus.names import kv_bucket_name, leases_bucket_name
from eeveepy.protocol.codec import EnvelopeEncoder
from eeveepy.protocol.models import (
    Body,
    ChatMessage,
    ChatUser,
    CommandRegistration,
    Control,
    ControlAction,
    LogRecord,
    OutgoingMessage,
)
from eeveepy.protocol.subjects import Subjects

S = Subjects()
QUIET = 1.0
"""Seconds a refused message is given to show up anyway."""


LEAKY = Path(__file__).resolve().parent / "operators" / "leaky_operator.py"


def leaky(module: str, system_root: Path, op_id: str, **table: Any) -> dict[str, Any]:
    """An operator table running ``module`` through the leaky wrapper (credentials handed out
    in ``<root>/<id>.creds``, as a compromised operator could)."""
    leak = str(system_root / f"{op_id}.creds")
    return {"command": [sys.executable, str(LEAKY), module], "env": {"LEAK_TO": leak}, **table}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with system_factory(tmp_path_factory.mktemp("perms")) as make:
        s = make()
        s.write(
            {
                "router": {"module": "operators.router", "settings": {"admins": ["console:*"]}},
                "echo": leaky("operators.echo", s.root, "echo"),
                "admin": {"module": "operators.admin"},
                # an executable is a command operator unless it says otherwise
                "console": leaky("operators.console", s.root, "console", role="connector"),
            }
        )
        yield s.up("router", "echo", "admin", "console")


def credentials(system: System, op_id: str) -> dict[str, str]:
    """The bus credentials the running ``op_id`` was started with (it handed them out)."""
    pid = system.op(op_id)["pid"]

    def leaked() -> dict[str, Any] | None:
        with contextlib.suppress(OSError, ValueError):
            data: dict[str, Any] = json.loads((system.root / f"{op_id}.creds").read_text())
            return data if data["pid"] == pid else None
        return None

    data = wait_for(leaked, 5, what=f"{op_id}'s credentials")
    return {"user": data["user"], "password": data["password"]}


def state(system: System) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(system.state_file.read_text(encoding="utf-8"))
    return data


@dataclass
class Client:
    """A connection with some credentials, and the errors the server sent it."""

    nc: NatsClient
    source: str
    errors: list[str] = field(default_factory=list)

    async def publish(self, subject: str, body: Body, reply: str = "") -> None:
        _, payload = EnvelopeEncoder(self.source).encode(body)
        await self.nc.publish(subject, payload, reply=reply)
        await self.nc.flush()

    async def violation(self, what: str) -> str:
        """Wait for the server's permissions violation on ``what`` (``for publish to "x"``)."""
        for _ in range(40):
            # the server lowercases what it names
            found = [e for e in self.errors if f"permissions violation {what}".lower() in e.lower()]
            if found:
                return found[0]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no permissions violation for {what!r}; errors: {self.errors}")


@contextlib.asynccontextmanager
async def connected(
    system: System, user: str, password: str, source: str, **options: Any
) -> AsyncIterator[Client]:
    client = Client(nats.aio.client.Client(), source)

    async def on_error(exc: Exception) -> None:
        client.errors.append(str(exc))

    await client.nc.connect(
        state(system)["url"],
        user=user,
        password=password,
        error_cb=on_error,
        allow_reconnect=False,
        connect_timeout=3,
        **options,
    )
    try:
        yield client
    finally:
        await client.nc.close()


@contextlib.asynccontextmanager
async def as_operator(system: System, op_id: str, **options: Any) -> AsyncIterator[Client]:
    async with connected(system, **credentials(system, op_id), source=op_id, **options) as c:
        yield c


@contextlib.asynccontextmanager
async def watching(system: System, pattern: str) -> AsyncIterator[list[Msg]]:
    """What arrives on ``pattern``, seen with the CLI's credentials (no limits)."""
    st = state(system)
    async with connected(system, st["user"], st["password"], "cli") as cli:
        got: list[Msg] = []

        async def take(msg: Msg) -> None:
            got.append(msg)

        await cli.nc.subscribe(pattern, cb=take)
        await cli.nc.flush()
        yield got


def chat_line(text: str, room: str = "#console") -> ChatMessage:
    user = ChatUser(id="mallory", name="mallory", account="root")
    return ChatMessage(platform="console", network="local", room=room, user=user, text=text)


# -- the attacks --------------------------------------------------------------------------------


async def test_forged_chat_message_is_refused_while_the_connectors_own_runs(
    system: System,
) -> None:
    subject = S.chat_in("console", "local", "#console")
    async with watching(system, "eevee.chat.>") as seen:
        async with as_operator(system, "echo") as echo:
            await echo.publish(subject, chat_line("!ps forged-by-echo"))
            await echo.violation(f'for publish to "{subject}"')
        async with as_operator(system, "console") as console:
            await console.publish(subject, chat_line("!echo said-by-the-connector"))
            assert not console.errors
        await asyncio.sleep(QUIET)
        texts = [m.data.decode() for m in seen]
    assert not [t for t in texts if "forged-by-echo" in t]  # neither the line nor a reply
    assert any("said-by-the-connector" in t and '"kind":"chat.out"' in t for t in texts)


async def test_a_connector_cannot_speak_for_another_network_nor_send(system: System) -> None:
    other = S.chat_in("irc", "libera", "#ops")
    event = S.chat_event("console", "elsewhere", "join")
    out = S.chat_out("console", "local")
    async with watching(system, "eevee.chat.>") as seen:
        async with as_operator(system, "console") as console:
            await console.publish(other, chat_line("as another network"))
            await console.violation(f'for publish to "{other}"')
            await console.publish(event, chat_line("as another network"))
            await console.violation(f'for publish to "{event}"')
            message = OutgoingMessage(platform="console", network="local", target="#x", text="y")
            await console.publish(out, message)
            await console.violation(f'for publish to "{out}"')
        await asyncio.sleep(QUIET)
    assert seen == []


async def test_subscribing_to_everything_is_refused(system: System) -> None:
    async with as_operator(system, "echo") as echo:
        got: list[Msg] = []

        async def take(msg: Msg) -> None:
            got.append(msg)

        for pattern in (">", "eevee.>", "_INBOX.>", "eevee.log.>", "eevee.chat.out.>"):
            await echo.nc.subscribe(pattern, cb=take)
            await echo.nc.flush()
            await echo.violation(f'for subscription to "{pattern}"')
        async with as_operator(system, "console") as console:
            await console.publish(S.chat_in("console", "local", "#console"), chat_line("hello"))
        await asyncio.sleep(QUIET)
    # echo may read chat input (its role), only through a subscription it is allowed
    assert got == []


async def test_supervisor_and_operator_control_are_refused(system: System) -> None:
    before = system.op("router")
    async with watching(system, "eevee.>") as seen, as_operator(system, "echo") as echo:
        ctl = Control(action=ControlAction.RESTART, target="router")
        await echo.publish(S.supervisor("ctl"), ctl, reply=echo.nc.new_inbox())
        await echo.violation(f'for publish to "{S.supervisor("ctl")}"')
        halt = Control(action=ControlAction.HALT, target="router")
        await echo.publish(S.operator_ctl("router"), halt, reply=echo.nc.new_inbox())
        await echo.violation(f'for publish to "{S.operator_ctl("router")}"')
        await asyncio.sleep(QUIET)
        assert [m.subject for m in seen if "ctl" in m.subject] == []
    after = system.op("router")
    assert (after["state"], after["pid"], after["restarts"]) == (
        "RUNNING",
        before["pid"],
        before["restarts"],
    )


async def test_forged_log_records_are_refused_own_ones_pass(system: System) -> None:
    async with watching(system, "eevee.log.>") as seen, as_operator(system, "echo") as echo:
        forged = LogRecord(operator="supervisor", level="critical", event="forged-by-echo")
        await echo.publish(S.log("supervisor", "critical"), forged)
        await echo.violation(f'for publish to "{S.log("supervisor", "critical")}"')
        own = LogRecord(operator="echo", level="info", event="echo-says-hi")
        await echo.publish(S.log("echo", "info"), own)
        await asyncio.sleep(QUIET)
        texts = [m.data.decode() for m in seen]
    assert not [t for t in texts if "forged-by-echo" in t]
    assert [t for t in texts if "echo-says-hi" in t]


async def test_other_buckets_and_the_leases_are_out_of_reach(system: System) -> None:
    async with as_operator(system, "echo", inbox_prefix="_INBOX.echo") as echo:
        js = echo.nc.jetstream(timeout=1.0)
        own = await js.key_value(kv_bucket_name("echo"))  # made by the supervisor
        await own.put("k", b"v")  # its own bucket works
        assert (await own.get("k")).value == b"v"
        # making a stream (even its bucket's) would let it capture others' subjects
        capture = StreamConfig(name=f"KV_{kv_bucket_name('echo')}", subjects=["_INBOX.>"])
        with pytest.raises(NatsTimeout):
            await js.add_stream(capture)
        await echo.violation(f'for publish to "$JS.API.STREAM.CREATE.{capture.name}"')
        for bucket in (kv_bucket_name("router"), leases_bucket_name("eevee")):
            with pytest.raises(NatsTimeout):  # refused: no answer comes
                await js.key_value(bucket)
            await echo.violation(f'for publish to "$JS.API.STREAM.INFO.KV_{bucket}"')
        leases = f"KV_{leases_bucket_name('eevee')}"
        for stream in (leases, "EEVEE_CHAT_IN"):
            with pytest.raises(NatsTimeout):
                await js.delete_stream(stream)
            await echo.violation(f'for publish to "$JS.API.STREAM.DELETE.{stream}"')
    st = state(system)
    async with connected(system, st["user"], st["password"], "cli") as cli:
        info = await cli.nc.jetstream().stream_info(f"KV_{leases_bucket_name('eevee')}")
        assert info.state.messages >= 4  # the supervisor's leases are all there
    system.op("echo")  # and everything still runs


async def test_replies_to_others_cannot_be_read(system: System) -> None:
    """echo's requests work through its own inbox; the default shared inbox is refused."""
    async with as_operator(system, "echo") as echo:  # nats-py's default `_INBOX` prefix
        await echo.nc.subscribe("_INBOX.x.>")
        await echo.nc.flush()
        await echo.violation('for subscription to "_INBOX.x.>"')


async def test_no_credentials_no_bus(system: System) -> None:
    url = state(system)["url"]
    for creds in ({}, {"user": "op:echo", "password": "wrong"}):
        with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
            await nats.connect(url, allow_reconnect=False, connect_timeout=2, **creds)


def test_secrets_are_nowhere_but_in_private_files(system: System) -> None:
    secrets = {credentials(system, op)["password"] for op in ("echo", "console")}
    secrets.add(state(system)["password"])
    config = list((system.state_dir / "nats").rglob("*.conf"))
    assert config, "no nats-server configuration found"
    for path in config:  # the server's configuration holds them, for our user alone
        assert path.stat().st_mode & 0o777 == 0o600, path
        assert path.parent.stat().st_mode & 0o777 == 0o700, path.parent
    texts = [p.read_text(encoding="utf-8") for p in config]
    assert all(secret in "".join(texts) for secret in secrets)
    ps = system.cli("ps", "--json")
    assert ps.returncode == 0, ps.stderr
    cmdlines = [" ".join(p.cmdline()) for p in system.collect() if p.is_running()]
    logs = [system.log()] + [
        p.read_text(encoding="utf-8", errors="replace") for p in Path(system.root).rglob("*.log*")
    ]
    for secret in secrets:
        assert secret not in ps.stdout, "ps --json"
        assert not [c for c in cmdlines if secret in c]
        assert not [text for text in logs if secret in text]


async def test_a_restarted_operator_gets_a_new_secret_the_old_one_is_void(
    system: System,
) -> None:
    before = system.op("echo")
    old = credentials(system, "echo")
    psutil.Process(before["pid"]).kill()
    after = system.wait_op("echo", lambda s: s["state"] == "RUNNING" and s["pid"] != before["pid"])
    new = credentials(system, "echo")
    assert new["user"] == old["user"]
    assert new["password"] != old["password"]
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
        await nats.connect(state(system)["url"], allow_reconnect=False, connect_timeout=2, **old)
    async with connected(system, **new, source="echo") as echo:  # the new one works
        await echo.publish(
            S.log("echo", "info"), LogRecord(operator="echo", level="info", event="x")
        )
        assert not echo.errors
    assert after["restarts"] == before["restarts"] + 1


async def test_another_operators_command_cannot_be_taken(system: System) -> None:
    """The issue's forged registration: echo re-registering admin's `restart` without its
    permission is refused by the server (admin's subject) or by the router (echo's)."""
    forged = CommandRegistration(operator="admin", name="restart", usage="!restart ANY")
    async with watching(system, "eevee.command.rejected.>") as rejected:
        async with as_operator(system, "echo") as echo:
            for subject in (S.command_register("admin"), S.command_register()):
                await echo.publish(subject, forged)
                await echo.violation(f'for publish to "{subject}"')
            await echo.publish(S.command_register("echo"), forged)
            as_itself = forged.model_copy(update={"operator": "echo"})
            await echo.publish(S.command_register("echo"), as_itself)
            await asyncio.sleep(QUIET)
        reasons = [json.loads(m.data)["body"]["reason"] for m in rejected]
    assert reasons == [
        "operator echo may only register its own commands, not 'admin''s",
        "`restart` clashes with command `restart` of operator admin (a command belongs to the"
        " operator that registered it first; the router's `owners` setting may let another"
        " take it over when that one is gone)",
    ]
    said = system.cli("chat", input="!help restart\n")
    assert said.stdout.strip() == "!restart ID — Restart the operator ID (or `all`).", said
