"""Commands end to end: the router, echo, ping and test command operators as real processes.

The test plays the connector: it publishes ChatMessage envelopes on ``chat.in`` and reads the
OutgoingMessage answers on ``chat.out`` (matched to the question by ``reply_to``). Most tests
share one system (router + echo + ping + a "tools" operator) under a prefix of their own;
replicas, router restarts and unavailable operators get systems of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from eeveepy.bus.client import BusConfig, barrier, connect
from eeveepy.bus.ipc import Ipc
from eeveepy.bus.names import kv_bucket_name
from eeveepy.protocol.models import (
    ChatMessage,
    ChatUser,
    CommandRegistration,
    CommandRejected,
    CommandSync,
    CommandUnregistration,
    DeadLetter,
    Envelope,
    MessageStyle,
    OutgoingMessage,
    Ready,
)
from eeveepy.protocol.subjects import Subjects
from tests.operator_procs import OperatorProc, contract_env

WAIT = 5.0
QUIET = 0.5
ROOT = Path(__file__).resolve().parents[1]

# A command operator with the odd cases: a permission, a rate limit, arguments, a failure and
# a slow command.
TOOLS = """
import asyncio, json
from eeveepy import Operator
from eeveepy.protocol.models import RateLimit

op = Operator(name="tools")

@op.command("secret", permission="admins", usage="!secret", help="Admins only.")
def secret(inv):
    return "the secret"

@op.command("limited", rate_limit=RateLimit(count=2, period=30))
def limited(inv):
    return "ok " + inv.text

@op.command("args", usage="!args APP [--flags]", pattern=r"(?P<app>\\w+)")
def args(inv):
    return json.dumps({"args": inv.args, "text": inv.text}, sort_keys=True)

@op.command("boom")
def boom(inv):
    raise RuntimeError("kaboom")

@op.command("sleepy")
async def sleepy(inv):
    await asyncio.sleep(3)
    return "late"

op.run([])
"""

# Registers `keep` once at start and never again: it does not answer command.sync.
KEEPER = """
from eeveepy import Operator
from eeveepy.protocol.models import CommandInvocation, CommandRegistration, CommandResult, Envelope

op = Operator(name="keeper")

@op.ipc.subscribe("command.run.keep", queue="cmd.keep")
async def keep(env: Envelope[CommandInvocation]) -> CommandResult:
    await op.reply(env.body.message, "kept")
    return CommandResult(ok=True)

@op.on_start
async def register() -> None:
    reg = CommandRegistration(operator=op.id, name="keep", usage="!keep")
    await op.ipc.publish(op.subjects.command_register(op.id), reg)

op.run([])
"""


Proc = OperatorProc


class System:
    """The test's bus connection (as a connector), its operator processes and their answers."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.tmp = tmp
        self.prefix = "cmd" + uuid.uuid4().hex[:12]
        self.subjects = Subjects(self.prefix)
        self.router_id = "router." + uuid.uuid4().hex[:8]
        self.ipc = Ipc(self.subjects, "irc.libera")
        self.procs: list[Proc] = []
        self.answers: defaultdict[str, asyncio.Queue[Envelope[OutgoingMessage]]] = defaultdict(
            asyncio.Queue
        )
        self.out: list[Envelope[OutgoingMessage]] = []

    async def start(self) -> None:
        await self.ipc.attach(await connect(BusConfig(url=self.url), name="test-router"))

        async def on_out(env: Envelope[OutgoingMessage]) -> None:
            self.out.append(env)
            await self.answers[env.body.reply_to or ""].put(env)

        await self.ipc.subscribe("chat.out.>", on_out)
        await barrier(self.ipc.nc)

    async def close(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.procs))
        with contextlib.suppress(Exception):
            await self.ipc.nc.jetstream().delete_key_value(kv_bucket_name(self.router_id))
        nc = self.ipc.nc
        await self.ipc.detach()
        await nc.close()

    # -- processes -----------------------------------------------------------------------------

    async def spawn(self, op_id: str, what: str, settings: dict[str, Any] | None = None) -> Proc:
        """Start ``what`` (a module name, or Python source) as ``op_id``; wait for Ready."""
        env = contract_env(
            url=self.url, prefix=self.prefix, op_id=op_id, tmp=self.tmp, settings=settings or {}
        )
        ready = await self.collect(self.subjects.operator_ready(op_id), Ready)
        args = ("-m", what) if "\n" not in what else ("-c", what)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            env=env,
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        child = Proc(op_id, proc)
        self.procs.append(child)
        try:
            await asyncio.wait_for(ready.get(), WAIT * 2)
        except TimeoutError:
            await child.stop()
            raise AssertionError(f"{op_id}: no Ready; stderr:\n{child.stderr.decode()}") from None
        return child

    async def router(self, settings: dict[str, Any] | None = None) -> Proc:
        return await self.spawn(self.router_id, "operators.router", settings)

    async def collect(self, subject: str, model: type[Any]) -> asyncio.Queue[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def handler(env: Envelope[dict[str, Any]]) -> None:
            await queue.put(env.model_copy(update={"body": model.model_validate(env.body)}))

        await self.ipc.subscribe(subject, handler)
        await barrier(self.ipc.nc)
        return queue

    # -- chat ----------------------------------------------------------------------------------

    async def say(
        self,
        text: str,
        *,
        user: str = "alice",
        room: str = "#ops",
        private: bool = False,
        host: str | None = None,
        account: str | None = None,
        style: MessageStyle = MessageStyle.MESSAGE,
        trace: str | None = None,
    ) -> str:
        """Publish a chat message as a connector would; returns its message id."""
        mid = "m-" + uuid.uuid4().hex[:12]
        msg = ChatMessage(
            platform="irc",
            network="libera",
            room=user if private else room,
            user=ChatUser(id=user, name=user, host=host, account=account),
            text=text,
            private=private,
            style=style,
            message_id=mid,
        )
        await self.ipc.publish(self.subjects.chat_in("irc", "libera", msg.room), msg, trace=trace)
        return mid

    async def answer(self, mid: str, wait: float = WAIT) -> Envelope[OutgoingMessage]:
        try:
            return await asyncio.wait_for(self.answers[mid].get(), wait)
        except TimeoutError:
            logs = "\n".join(f"--- {p.id}\n{p.stderr.decode()[-3000:]}" for p in self.procs)
            raise AssertionError(f"no answer to {mid}\n{logs}") from None

    async def ask(self, text: str, **kw: Any) -> str:
        return (await self.answer(await self.say(text, **kw))).body.text

    def unanswered(self, *mids: str) -> None:
        for mid in mids:
            assert self.answers[mid].empty(), f"{mid}: {self.answers[mid].get_nowait().body}"

    async def wait_commands(self, *names: str) -> None:
        """Until the router lists ``names`` (they have been registered)."""
        deadline = asyncio.get_running_loop().time() + WAIT * 2
        while True:  # a new user each time: no rate limit applies to the waiting
            user = "waiter" + uuid.uuid4().hex[:8]
            mid = await self.say("help", user=user, account="root", private=True)
            with contextlib.suppress(AssertionError):
                listed = (await self.answer(mid, 0.5)).body.text
                if all(f" {n}," in listed or f" {n} " in listed for n in names):
                    return
            assert asyncio.get_running_loop().time() < deadline, f"{names} never registered"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def system(url: str, tmp: Path) -> AsyncIterator[System]:
    s = System(url, tmp)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


ROUTER_SETTINGS = {
    "admins": ["irc:libera:account:root"],
    "ignore": ["irc:libera:troll!*@*"],
    "prefix_overrides": {"irc/libera/#quiet": ["?"]},
    "timeout": 1.0,
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bot(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    """One system for the module: router, echo, ping and tools."""
    async with system(nats_url, tmp_path_factory.mktemp("bot")) as s:
        await asyncio.gather(
            s.router(ROUTER_SETTINGS),
            s.spawn("echo", "operators.echo"),
            s.spawn("ping", "operators.ping"),
            s.spawn("tools", TOOLS),
        )
        await s.wait_commands("echo", "ping", "secret", "sleepy")
        yield s


# -- the shared system ------------------------------------------------------------------------


async def test_echo_answers_in_the_room_with_the_trace(bot: System) -> None:
    mid = await bot.say("!echo hi  there", trace="trace-1")
    reply = await bot.answer(mid)
    assert reply.body.text == "hi  there"
    assert (reply.body.target, reply.body.private, reply.body.platform) == ("#ops", False, "irc")
    assert reply.headers["trace"] == "trace-1"
    assert reply.source == "echo"
    assert await bot.ask("!ping") == "pong"


async def test_addressed_by_name(bot: System) -> None:
    assert await bot.ask("eevee: echo one") == "one"
    assert await bot.ask("Eevee, echo two") == "two"
    assert await bot.ask("@eevee echo three") == "three"
    assert await bot.ask("eevee: !ping") == "pong"


async def test_private_message_needs_no_prefix(bot: System) -> None:
    reply = await bot.answer(await bot.say("echo secretly", user="bob", private=True))
    assert (reply.body.text, reply.body.target, reply.body.private) == ("secretly", "bob", True)
    assert await bot.ask("!ping", user="bob", private=True) == "pong"


async def test_not_commands_are_ignored(bot: System) -> None:
    quiet = [
        await bot.say("echo hi"),  # no prefix in a room
        await bot.say("eevee is nice"),
        await bot.say("!ping", style=MessageStyle.NOTICE),
        await bot.say("!ping", user="troll", host="~t@spam.example"),  # ignored user
        await bot.say("!ping", room="#quiet"),  # that room's prefix is "?"
    ]
    assert await bot.ask("?ping", room="#quiet") == "pong"  # answered after all of them
    bot.unanswered(*quiet)


async def test_help(bot: System) -> None:
    listed = await bot.ask("!help")
    assert listed.startswith("commands: args, boom, echo, help, limited, ping, sleepy ")
    assert "secret" not in listed  # alice may not run it
    assert "secret" in await bot.ask("!help", user="root", account="root")
    assert await bot.ask("!help echo") == "!echo TEXT — Repeat TEXT."
    assert await bot.ask("!help !secret") == "!secret — Admins only. (you may not run it)"
    assert await bot.ask("!help nope") == "unknown command `nope`; try `!help`"


async def test_unknown_command_hint(bot: System) -> None:
    assert await bot.ask("!nope") == "unknown command `nope`; try `!help`"
    assert await bot.ask("?nope", room="#quiet") == "unknown command `nope`; try `?help`"
    assert await bot.ask("nope", private=True) == "unknown command `nope`; try `help`"


async def test_permission(bot: System) -> None:
    assert await bot.ask("!secret") == "you are not allowed to run `secret`"
    assert await bot.ask("!secret", user="x", account="root") == "the secret"


async def test_rate_limit_drops_with_one_notice(bot: System) -> None:
    mids = [await bot.say(f"!limited {i}", user="hasty") for i in range(5)]
    assert (await bot.answer(mids[0])).body.text == "ok 0"
    assert (await bot.answer(mids[1])).body.text == "ok 1"
    notice = await bot.answer(mids[2])
    assert notice.body.text == "slow down: at most 2 `limited` per 30 s"
    assert (notice.body.style, notice.body.private, notice.body.target) == (
        MessageStyle.NOTICE,
        True,
        "hasty",
    )
    assert await bot.ask("!ping", user="hasty") == "pong"  # other commands are not limited
    assert await bot.ask("!limited x", user="patient") == "ok x"  # nor other users
    bot.unanswered(*mids[3:])


async def test_arguments_usage_failures_and_timeouts(bot: System) -> None:
    got = json.loads(await bot.ask("!args web --env prod eu --force"))
    assert got == {"args": {"app": "web", "env": "prod eu", "force": "true"}, "text": "web"}
    assert await bot.ask("!args") == "usage: !args APP [--flags]"
    assert await bot.ask("!args two words") == "usage: !args APP [--flags]"
    assert await bot.ask("!boom") == "`boom` failed: kaboom"
    assert await bot.ask("!sleepy") == "`sleepy` timed out"


async def test_malformed_registrations_are_rejected_alone(bot: System) -> None:
    rejected = await bot.collect(bot.subjects.command_rejected("badop"), CommandRejected)
    register = bot.subjects.command_register()

    await bot.ipc.publish(register, CommandRegistration(operator="badop", name="bad", pattern="("))
    got = await asyncio.wait_for(rejected.get(), WAIT)
    assert (got.body.name, got.body.operator) == ("bad", "badop")
    assert got.body.reason.startswith("invalid pattern '(': missing )")

    _, payload = bot.ipc.encode(CommandRegistration(operator="badop", name="x"))
    data = json.loads(payload)
    data["body"]["name"] = "Bad Name"
    await bot.ipc.publish_raw(register, json.dumps(data).encode())
    got = await asyncio.wait_for(rejected.get(), WAIT)
    assert got.body.name == "Bad Name"
    assert got.body.reason.startswith("name: String should match pattern")

    for clash in (
        CommandRegistration(operator="badop", name="echo", usage="mine now"),
        CommandRegistration(operator="badop", name="parrot", aliases=["ping"]),
        CommandRegistration(operator="badop", name="help"),
    ):
        await bot.ipc.publish(register, clash)
        got = await asyncio.wait_for(rejected.get(), WAIT)
        assert got.body.name == clash.name
    assert got.body.reason == "`help` is the router's own command"

    assert await bot.ask("!echo still here") == "still here"
    listed = await bot.ask("!help")
    assert "bad" not in listed
    assert "parrot" not in listed
    assert await bot.ask("!parrot") == "unknown command `parrot`; try `!help`"
    router = next(p for p in bot.procs if p.id == bot.router_id)
    for _ in range(50):  # the reasons are logged too
        if b"registration rejected" in router.stderr and b"missing )" in router.stderr:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(router.stderr.decode()[-2000:])


async def test_an_operator_registers_for_itself_only(bot: System) -> None:
    """On ``command.register.<id>`` the source must be ``id`` (else dead-lettered) and the
    registration must name ``id`` (else refused): echo's command cannot be taken that way."""
    mallory = Ipc(bot.subjects, "mallory")
    await mallory.attach(await connect(BusConfig(url=bot.url), name="mallory"))
    try:
        rejected = await bot.collect(bot.subjects.command_rejected("mallory"), CommandRejected)
        letters = await bot.collect(bot.subjects.pattern("dlq.command.register.>"), DeadLetter)
        forged = CommandRegistration(operator="echo", name="echo", usage="mine now")
        await mallory.publish(bot.subjects.command_register("mallory"), forged)
        got = await asyncio.wait_for(rejected.get(), WAIT)
        assert (
            got.body.reason == "operator mallory may only register its own commands, not 'echo''s"
        )
        await mallory.publish(bot.subjects.command_register("echo"), forged)
        letter = await asyncio.wait_for(letters.get(), WAIT)
        assert letter.body.subject == bot.subjects.command_register("echo")
        assert letter.body.reason == "source 'mallory' is not 'echo', whose subject this is"
        assert letter.source == bot.router_id
        assert await bot.ask("!help echo", account="root") == "!echo TEXT — Repeat TEXT."
    finally:
        nc = mallory.nc
        await mallory.detach()
        await nc.close()


async def test_an_operator_withdraws_its_own_commands_only(bot: System) -> None:
    """A ``command.unregister`` on ``command.register.<id>`` makes the router forget ``id``'s
    registration; one naming another operator's command is refused and changes nothing."""
    tide, mallory = Ipc(bot.subjects, "tide"), Ipc(bot.subjects, "mallory")
    await tide.attach(await connect(BusConfig(url=bot.url), name="tide"))
    await mallory.attach(await connect(BusConfig(url=bot.url), name="mallory"))
    try:
        rejected = await bot.collect(bot.subjects.command_rejected("mallory"), CommandRejected)
        await tide.publish(
            bot.subjects.command_register("tide"), CommandRegistration(operator="tide", name="wave")
        )
        for _ in range(100):
            if "wave" in await bot.ask("!help"):
                break
        else:
            raise AssertionError("wave never registered")
        forged = CommandUnregistration(operator="tide", name="wave")
        await mallory.publish(bot.subjects.command_register("mallory"), forged)
        got = await asyncio.wait_for(rejected.get(), WAIT)
        assert got.body.reason.startswith("operator mallory may only register its own commands")
        assert "wave" in await bot.ask("!help")
        await tide.publish(bot.subjects.command_register("tide"), forged)
        for _ in range(100):
            if "wave" not in await bot.ask("!help"):
                break
        else:
            raise AssertionError("wave never forgotten")
        assert await bot.ask("!wave") == "unknown command `wave`; try `!help`"
    finally:
        for ipc in (tide, mallory):
            nc = ipc.nc
            await ipc.detach()
            await nc.close()


async def test_chat_input_must_match_its_subject(bot: System) -> None:
    """A line whose body names another platform or network than its subject is dead-lettered:
    identities (``account``) are trusted only from the connector's own subjects."""
    letters = await bot.collect(bot.subjects.pattern("dlq.chat.in.>"), DeadLetter)
    for platform, network in (("irc", "oftc"), ("xmpp", "libera")):
        msg = ChatMessage(
            platform=platform,
            network=network,
            room="#ops",
            user=ChatUser(id="root", name="root", account="root"),
            text="!echo as an admin elsewhere",
            message_id="forged-" + platform,
        )
        await bot.ipc.publish(bot.subjects.chat_in("irc", "libera", "#ops"), msg)
        letter = await asyncio.wait_for(letters.get(), WAIT)
        assert letter.body.subject == bot.subjects.chat_in("irc", "libera", "#ops")
        assert "is not the subject's" in letter.body.reason
    await asyncio.sleep(QUIET)
    bot.unanswered("forged-irc", "forged-xmpp")


# -- systems of their own ---------------------------------------------------------------------


async def test_two_echo_replicas_answer_each_command_once(nats_url: str, tmp_path: Path) -> None:
    async with system(nats_url, tmp_path) as s:
        await asyncio.gather(
            s.router(), s.spawn("echo.a", "operators.echo"), s.spawn("echo.b", "operators.echo")
        )
        await s.wait_commands("echo")
        s.out.clear()
        mids = [await s.say(f"!echo n{i}", user=f"u{i % 7}") for i in range(200)]
        replies = [await s.answer(mid) for mid in mids]
        assert [r.body.text for r in replies] == [f"n{i}" for i in range(200)]
        await asyncio.sleep(QUIET)
        assert len(s.out) == 200  # nothing twice
        sources = {r.source for r in replies}
        assert sources == {"echo.a", "echo.b"}, sources  # the queue group shared the load


async def test_queue_mode_delays_then_drops(nats_url: str, tmp_path: Path) -> None:
    async with system(nats_url, tmp_path) as s:
        settings = {
            "user_rate": {"count": 1, "period": 1.0},
            "rate_mode": "queue",
            "queue_max_delay": 1.5,
        }
        await asyncio.gather(s.router(settings), s.spawn("ping", "operators.ping"))
        await s.wait_commands("ping")
        loop = asyncio.get_running_loop()
        started = loop.time()
        mids = [await s.say("!ping", user="q") for _ in range(3)]
        assert (await s.answer(mids[0])).body.text == "pong"
        assert loop.time() - started < 0.9
        notice = await s.answer(mids[2])  # 2 s away: over the 1.5 s of queueing
        assert notice.body.text == "slow down: at most 1 command per 1 s"
        assert (await s.answer(mids[1])).body.text == "pong"  # queued for about 1 s
        assert 0.9 < loop.time() - started < 3.0


OWNERS = {"owners": {"keep": ["keeper", "keeper2"]}}


async def test_router_restart_keeps_registrations(nats_url: str, tmp_path: Path) -> None:
    async with system(nats_url, tmp_path) as s:
        registrations = await s.collect(
            s.subjects.pattern("command.register.>"), CommandRegistration
        )
        syncs = await s.collect(s.subjects.command_sync(), CommandSync)
        # `keep` may change hands between keeper and keeper2 only
        router = await s.router(OWNERS)  # first: the keeper registers once, at its start
        keeper = await s.spawn("keeper", KEEPER)
        await s.wait_commands("keep")
        assert await s.ask("!keep") == "kept"
        assert (await asyncio.wait_for(syncs.get(), WAIT)).body.router == s.router_id

        kv = await s.ipc.nc.jetstream().key_value(kv_bucket_name(s.router_id))
        stored = CommandRegistration.model_validate_json((await kv.get("reg.keep.keeper")).value)
        assert (stored.name, stored.operator, stored.usage) == ("keep", "keeper", "!keep")

        await router.stop(signal.SIGKILL)
        await s.router(OWNERS)
        assert (await asyncio.wait_for(syncs.get(), WAIT)).body.router == s.router_id
        assert await s.ask("!keep") == "kept"  # known from the store, not re-registered
        assert await s.ask("!help keep") == "!keep"
        assert registrations.qsize() == 1  # keeper registered once, at its start

        await keeper.stop()
        assert await s.ask("!keep") == (
            "`keep` is unavailable right now (its operator is not running)"
        )

        # Its operator is gone: only an operator the owners setting lists may take it over.
        refused = await s.collect(s.subjects.command_rejected("intruder"), CommandRejected)
        intruder = CommandRegistration(operator="intruder", name="keep", usage="!keep MINE")
        await s.ipc.publish(s.subjects.command_register(), intruder)
        got = await asyncio.wait_for(refused.get(), WAIT)
        assert got.body.reason == "`keep` may only be registered by keeper, keeper2"
        rejected = await s.collect(s.subjects.command_rejected("keeper2"), CommandRejected)
        new = CommandRegistration(operator="keeper2", name="keep", usage="!keep NEW")
        await s.ipc.publish(s.subjects.command_register(), new)
        for _ in range(50):
            if await s.ask("!help keep") == "!keep NEW":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the stale registration was not replaced")
        assert rejected.empty()
        with pytest.raises(Exception, match="not found"):
            await kv.get("reg.keep.keeper")
