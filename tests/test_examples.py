"""The example operators (seen, karma, admin) end to end, as real processes behind the router.

The test plays the connector: it publishes ChatMessage envelopes on ``chat.in`` and reads the
OutgoingMessage answers on ``chat.out`` (matched to the question by ``reply_to``). It also plays
the supervisor for the admin operator: it answers ``supervisor.status`` and ``supervisor.ctl``
itself and records what it was asked. One system (router, seen, karma, admin) serves the
module, under a prefix of its own; operator ids are unique too, since KV buckets are per id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from eeveepy.bus.client import BusConfig, barrier, connect
from eeveepy.bus.ipc import Ipc, Subscription
from eeveepy.bus.names import kv_bucket_name
from eeveepy.protocol.models import (
    ChatMessage,
    ChatUser,
    Control,
    ControlAction,
    ControlResult,
    Envelope,
    MessageStyle,
    OperatorStatus,
    OutgoingMessage,
    Ready,
    SupervisorStatus,
)
from eeveepy.protocol.subjects import Subjects
from operators import admin, karma, seen
from tests.operator_procs import OperatorProc, contract_env, start_operator

WAIT = 5.0
SEEN_WRITE_EVERY = 0.3
"""seen's interval between store writes here (its default is 1 s)."""
ROOT_USER = {"user": "root", "account": "root"}  # an admin of the router


Proc = OperatorProc


class FakeSupervisor:
    """Answers ``supervisor.status`` and ``supervisor.ctl`` as a supervisor named ``fake``."""

    def __init__(self) -> None:
        self.status_requests: list[Envelope[dict[str, Any]]] = []
        self.controls: list[Envelope[Control]] = []
        self.operators = [
            OperatorStatus(id="router", state="RUNNING", pid=11, uptime_s=7300.0),
            OperatorStatus(id="echo", state="RUNNING", pid=12, uptime_s=300.0, restarts=1),
            OperatorStatus(
                id="seen",
                state="BACKOFF",
                restarts=3,
                message="exit code 1; restarting in 0.50 s",
            ),
        ]

    async def on_status(self, env: Envelope[dict[str, Any]]) -> SupervisorStatus:
        self.status_requests.append(env)
        return SupervisorStatus(
            supervisor="fake", pid=1, started=datetime.now(UTC), operators=self.operators
        )

    async def on_ctl(self, env: Envelope[Control]) -> ControlResult:
        self.controls.append(env)
        known = [op.id for op in self.operators]
        if env.body.target not in known:
            return ControlResult(
                ok=False, message=f"unknown operator {env.body.target!r} (known: router, echo)"
            )
        return ControlResult(
            ok=True,
            operators=[OperatorStatus(id=env.body.target, state="RUNNING", pid=99, uptime_s=0.4)],
        )


class System:
    """The test's bus connection (as a connector), its operator processes and their answers."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.tmp = tmp
        tag = uuid.uuid4().hex[:8]
        self.prefix = "ex" + tag
        self.subjects = Subjects(self.prefix)
        self.ids = {name: f"{name}.{tag}" for name in ("router", "seen", "karma", "admin")}
        self.ipc = Ipc(self.subjects, "irc.libera")
        self.procs: dict[str, Proc] = {}
        self.answers: defaultdict[str, asyncio.Queue[Envelope[OutgoingMessage]]] = defaultdict(
            asyncio.Queue
        )
        self.supervisor = FakeSupervisor()
        self.supervisor_subs: list[Subscription] = []

    async def start(self) -> None:
        await self.ipc.attach(await connect(BusConfig(url=self.url), name="test-examples"))

        async def on_out(env: Envelope[OutgoingMessage]) -> None:
            await self.answers[env.body.reply_to or ""].put(env)

        await self.ipc.subscribe("chat.out.>", on_out)
        self.supervisor_subs = [
            await self.ipc.subscribe(self.subjects.supervisor("status"), self.supervisor.on_status),
            await self.ipc.subscribe(self.subjects.supervisor("ctl"), self.supervisor.on_ctl),
        ]
        await barrier(self.ipc.nc)

    async def close(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.procs.values()))
        js = self.ipc.nc.jetstream()
        for op_id in self.ids.values():
            with contextlib.suppress(Exception):
                await js.delete_key_value(kv_bucket_name(op_id, self.prefix))
        nc = self.ipc.nc
        await self.ipc.detach()
        await nc.close()

    async def spawn(self, name: str, settings: dict[str, Any] | None = None) -> Proc:
        """Start ``operators.<name>`` under its id; wait for Ready."""
        op_id = self.ids[name]
        env = contract_env(
            url=self.url, prefix=self.prefix, op_id=op_id, tmp=self.tmp, settings=settings or {}
        )
        ready: asyncio.Queue[Ready] = asyncio.Queue()

        async def on_ready(msg: Ready) -> None:
            await ready.put(msg)

        sub = await self.ipc.subscribe(self.subjects.operator_ready(op_id), on_ready)
        await barrier(self.ipc.nc)
        child = self.procs[name] = await start_operator(f"operators.{name}", env)
        try:
            await asyncio.wait_for(ready.get(), WAIT * 2)
        except TimeoutError:
            await child.stop()
            raise AssertionError(f"{op_id}: no Ready; stderr:\n{child.stderr.decode()}") from None
        finally:
            await sub.unsubscribe()
        return child

    # -- chat ----------------------------------------------------------------------------------

    def chat(
        self,
        text: str,
        *,
        user: str = "alice",
        room: str = "#ops",
        private: bool = False,
        account: str | None = None,
        style: MessageStyle = MessageStyle.MESSAGE,
    ) -> ChatMessage:
        return ChatMessage(
            platform="irc",
            network="libera",
            room=user if private else room,
            user=ChatUser(id=user, name=user, account=account),
            text=text,
            private=private,
            style=style,
            message_id="m-" + uuid.uuid4().hex[:12],
        )

    async def say(self, text: str, **kw: Any) -> str:
        """Publish a chat message as a connector would; returns its message id."""
        msg = self.chat(text, **kw)
        await self.ipc.publish(self.subjects.chat_in("irc", "libera", msg.room), msg)
        assert msg.message_id is not None
        return msg.message_id

    async def say_at(self, when: datetime, text: str, **kw: Any) -> str:
        """Publish a chat message whose envelope says it was sent at ``when``."""
        msg = self.chat(text, **kw)
        _, payload = self.ipc.encode(msg)
        data = json.loads(payload)
        data["timestamp"] = when.isoformat().replace("+00:00", "Z")
        subject = self.subjects.chat_in("irc", "libera", msg.room)
        await self.ipc.publish_raw(subject, json.dumps(data).encode())
        assert msg.message_id is not None
        return msg.message_id

    async def answer(self, mid: str, wait: float = WAIT) -> Envelope[OutgoingMessage]:
        try:
            return await asyncio.wait_for(self.answers[mid].get(), wait)
        except TimeoutError:
            logs = "\n".join(
                f"--- {p.id}\n{p.stderr.decode()[-3000:]}" for p in self.procs.values()
            )
            raise AssertionError(f"no answer to {mid}\n{logs}") from None

    async def ask(self, text: str, **kw: Any) -> str:
        return (await self.answer(await self.say(text, **kw))).body.text

    async def eventually(self, text: str, expect: Callable[[str], bool], **kw: Any) -> str:
        """Ask until the answer is as expected (what was said may still be being stored)."""
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            got = await self.ask(text, **kw)
            if expect(got) or asyncio.get_running_loop().time() > deadline:
                return got
            await asyncio.sleep(0.05)

    async def wait_commands(self, *names: str) -> None:
        """Until the router lists ``names`` to an admin (they have been registered)."""
        deadline = asyncio.get_running_loop().time() + WAIT * 2
        while True:
            listed = await self.ask("help", user="root", account="root", private=True)
            if all(f" {n}," in listed or f" {n} " in listed for n in names):
                return
            assert asyncio.get_running_loop().time() < deadline, f"{names} never registered"
            await asyncio.sleep(0.05)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bot(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    """One system for the module: router, seen, karma and admin, with a fake supervisor."""
    s = System(nats_url, tmp_path_factory.mktemp("examples"))
    await s.start()
    try:
        await asyncio.gather(
            s.spawn("router", {"admins": ["irc:libera:account:root"], "timeout": 3.0}),
            s.spawn("seen", {"write_every": SEEN_WRITE_EVERY}),
            s.spawn("karma"),
            s.spawn("admin", {"supervisor": "fake"}),
        )
        await s.wait_commands("seen", "karma", "ps", "restart")
        yield s
    finally:
        await s.close()


# -- seen -------------------------------------------------------------------------------------


async def test_seen_answers_from_what_was_said_and_survives_a_restart(bot: System) -> None:
    assert await bot.ask("!seen nobody", user="bob") == "I have not seen nobody."
    assert await bot.ask("!seen", user="bob") == "usage: !seen NICK"

    await bot.say("hello there", user="Alice")
    await bot.say("psst, a secret", user="Alice", private=True)  # not recorded
    await bot.say("ignore me", user="Alice", style=MessageStyle.NOTICE)  # not recorded
    expected = "Alice was last seen just now in #ops, saying: hello there"
    assert await bot.eventually("!seen alice", lambda a: a == expected, user="bob") == expected
    assert await bot.ask("!seen ALICE?", user="bob") == expected
    assert await bot.ask("!seen bob", user="bob") == "you are right here, bob."

    five_ago = datetime.now(UTC) - timedelta(minutes=5, seconds=3)
    await bot.say_at(five_ago, "brb, coffee", user="carol", room="#dev.team")
    await bot.say("waves", user="dave", style=MessageStyle.ACTION)
    expected_carol = "carol was last seen 5 minutes ago in #dev.team, saying: brb, coffee"
    got = await bot.eventually("!seen carol", lambda a: a == expected_carol, user="bob")
    assert got == expected_carol
    expected_dave = "dave was last seen just now in #ops, doing: * dave waves"
    got = await bot.eventually("!seen dave", lambda a: a == expected_dave, user="bob")
    assert got == expected_dave

    # Kill it (no graceful stop) once its interval has passed, and start it again: what it
    # knew comes from its KV bucket.
    await asyncio.sleep(SEEN_WRITE_EVERY * 3)
    await bot.procs["seen"].stop(signal.SIGKILL)
    assert await bot.ask("!seen alice", user="bob") == (
        "`seen` is unavailable right now (its operator is not running)"
    )
    await bot.spawn("seen")
    assert await bot.ask("!seen alice", user="bob") == expected
    assert await bot.ask("!seen carol", user="bob") == expected_carol


def test_seen_helpers() -> None:
    assert [seen.ago(s) for s in (0, 9, 42, 61, 3600, 7300, 86400 * 3)] == [
        "just now",
        "just now",
        "42 seconds ago",
        "1 minute ago",
        "1 hour ago",
        "2 hours ago",
        "3 days ago",
    ]
    tokens = {seen.kv_token(s) for s in ("", "=", "a.b", "a b", "#ops", "café", "A", "a")}
    assert len(tokens) == 8  # distinct strings, distinct tokens
    assert seen.seen_key("irc", "Libera.Chat", "[Alice]") == "seen.irc.Libera=2EChat.=5Balice=5D"


# -- karma ------------------------------------------------------------------------------------


async def test_karma_votes_self_karma_and_top(bot: System) -> None:
    assert await bot.ask("!karma", user="bob") == "nobody has any karma yet."
    assert await bot.ask("!karma bob") == "bob has karma 0"

    await bot.say("thanks bob++", user="alice")
    await bot.say("bob++ bob++ (only once per line)", user="carol")
    await bot.say("(the build)++ and python++", user="alice")
    await bot.say("python--, sorry", user="dave")
    await bot.say("!karma c++", user="dave")  # a command, not a vote
    await bot.say("bob++", user="dave", private=True)  # karma is given in rooms
    await bot.say("done++", user="dave")  # lines are read in order: this one comes last
    assert await bot.eventually("!karma done", lambda a: a.endswith(" 1")) == "done has karma 1"
    assert await bot.ask("!karma Bob", user="eve") == "Bob has karma 2"
    assert await bot.ask("!karma python") == "python has karma 0"
    assert await bot.ask("!karma (The  Build)") == "The Build has karma 1"
    assert await bot.ask("!karma c") == "c has karma 0"

    note = await bot.answer(await bot.say("alice++ is the best", user="alice"))
    assert note.body.text == "alice: no self-karma."
    assert (note.body.target, note.body.private) == ("#ops", False)
    assert await bot.ask("!karma alice", user="bob") == "alice has karma 0"

    await bot.say("zed-- oops++", user="erin")
    got = await bot.eventually("!karma", lambda a: "oops" in a and "zed" in a, user="bob")
    assert got == "top karma: bob (2), done (1), oops (1), the build (1), zed (-1)"


def test_karma_votes_in_a_line() -> None:
    assert karma.votes("c++ is great, so is (Free Software)++!") == [
        ("c", 1),
        ("Free Software", 1),
    ]
    assert karma.votes("run it with --force or a--b or -----") == []
    assert karma.votes("x++ X-- x++") == [("x", 1)]
    assert karma.karma_key("irc", "libera", "(The  Build)") == "karma.irc.libera.the=20build"


async def test_5_kb_names_and_things_keep_seen_and_karma_up(bot: System) -> None:
    """Keys built from chat text are bounded: a 5 KB display name or thing used to make a KV
    request whose PUB line was over the server's 4096-byte control line, the server closed the
    operator's connection and it died. Now both stay up (same process) and keep answering."""
    procs = [bot.procs["seen"], bot.procs["karma"]]
    pids = [p.proc.pid for p in procs]
    huge = "Zed" + "z" * 5000
    for i in range(7):
        await bot.say(f"line {i}", user=huge)
    await bot.say("(" + "é" * 60 + ")++", user="bob")  # 60 characters: a vote, 720 key bytes
    expected = f"{huge} was last seen just now in #ops, saying: line 6"
    assert await bot.eventually(f"!seen {huge}", lambda a: a == expected) == expected
    assert await bot.eventually(f"!karma {'é' * 60}", lambda a: a.endswith(" 1")) == (
        f"{'é' * 60} has karma 1"
    )
    assert await bot.ask(f"!karma {huge}") == f"{huge} has karma 0"
    assert await bot.ask(f"!seen {huge[:-1]}") == f"I have not seen {huge[:-1]}."
    for proc, pid in zip(procs, pids, strict=True):
        assert proc.proc.returncode is None, proc.log()
        assert proc.proc.pid == pid
        assert "disconnected" not in proc.stderr.decode(), proc.log()


# -- admin ------------------------------------------------------------------------------------


async def test_ps_for_admins_only(bot: System) -> None:
    fake = bot.supervisor
    before = len(fake.status_requests)
    assert await bot.ask("!ps") == "you are not allowed to run `ps`"
    assert len(fake.status_requests) == before  # the router refused: nobody asked

    got = await bot.ask("!ps", **ROOT_USER)
    assert got == (
        "supervisor fake, 3 operators: router RUNNING 2h, echo RUNNING 5m (1 restart), "
        "seen BACKOFF (3 restarts; exit code 1; restarting in 0.50 s)"
    )
    request = fake.status_requests[-1]
    assert request.kind == "ping"
    assert request.headers["supervisor"] == "fake"  # the admin's `supervisor` setting
    assert "ps" not in await bot.ask("!help")  # not even listed for others


async def test_restart_sends_a_control_to_the_supervisor(bot: System) -> None:
    fake = bot.supervisor
    assert await bot.ask("!restart echo") == "you are not allowed to run `restart`"
    assert fake.controls == []

    assert await bot.ask("!restart echo", **ROOT_USER) == "restarted echo: echo RUNNING 0s"
    (sent,) = fake.controls
    assert (sent.body.action, sent.body.target) == (ControlAction.RESTART, "echo")
    assert sent.headers["supervisor"] == "fake"

    assert await bot.ask("!restart nope", **ROOT_USER) == (
        "could not restart nope: unknown operator 'nope' (known: router, echo)"
    )
    assert await bot.ask("!restart Not.An.Id!", **ROOT_USER) == (
        "'Not.An.Id!' is not an operator id."
    )
    assert await bot.ask("!restart", **ROOT_USER) == "usage: !restart ID"
    assert len(fake.controls) == 2


async def test_ps_without_a_supervisor(bot: System) -> None:
    status, ctl = bot.supervisor_subs
    await status.unsubscribe()
    await barrier(bot.ipc.nc)
    try:
        got = await bot.ask("!ps", **ROOT_USER)
        subject = f"{bot.prefix}.supervisor.status"
        assert got == f"cannot reach the supervisor: nobody answers on {subject}"
    finally:
        subject = bot.subjects.supervisor("status")
        bot.supervisor_subs = [await bot.ipc.subscribe(subject, bot.supervisor.on_status), ctl]


def test_admin_formatting() -> None:
    assert [admin.uptime(s) for s in (0, 59, 60, 3599, 3600, 86400)] == [
        "0s",
        "59s",
        "1m",
        "59m",
        "1h",
        "1d",
    ]
    long = OperatorStatus(id="x", state="FATAL", message="why " * 40)
    assert admin.describe(long, 20) == "x FATAL (why why why why why…)"
    failed = ControlResult(ok=False, message="")
    assert admin.describe_result("x", failed) == "could not restart x: refused"
