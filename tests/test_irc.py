"""The IRC connector end to end: real IRC servers, real operator processes, raw IRC clients.

Router and echo run once for the module (as processes, under a prefix of their own); each test
starts IRC connectors (``python -m operators.irc`` as ``irc.<network>``) against ngircd
(plain, TLS, restartable) or InspIRCd + Anope (SASL), and talks to the bot from raw IRC clients
(tests/irc_servers.py). Servers are started once per session; the whole module takes ~30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

ROOT = Path(__file__).resolve().parents[1]

pytest.register_assert_rewrite("tests.irc_servers")  # imported here, before pytest_plugins

from eeveepy.protocol.models import (  # noqa: E402
    ChatEvent,
    ChatMessage,
    ChatUser,
    ConnectorControl,
    ConnectorControlResult,
    DeadLetter,
    Envelope,
    MessageStyle,
    OutgoingMessage,
    Ping,
    Pong,
)
from tests.chat_system import ChatSystem, running_system  # noqa: E402
from tests.irc_servers import (  # noqa: E402
    SASL_ACCOUNT,
    InspircdAnope,
    IrcClient,
    Line,
    Ngircd,
    tls_context,
)
from tests.operator_procs import OperatorProc as Proc  # noqa: E402

pytest_plugins = ["tests.irc_servers"]

WAIT = 10.0
CHANNEL = "#eevee"


Bus = ChatSystem


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bus(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bus]:
    async with running_system(nats_url, tmp_path_factory.mktemp("irc"), "irc") as b:
        yield b


def plain(server: Ngircd, **settings: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": server.port, **settings}


async def joined(client: IrcClient, channel: str, proc: Proc, *, since: int = 0) -> str:
    """Until ``client`` sees the bot join ``channel``; returns the bot's nick."""
    try:
        line = await client.wait(
            lambda m: (
                m.command == "JOIN"
                and m.nick.startswith("eevee")  # the bots' nicks; the raw clients' differ
                and m.nick != client.nick
                and m.params[0].lower() == channel.lower()
            ),
            since=since,
            timeout=WAIT,
        )
    except AssertionError as e:
        raise AssertionError(f"the bot never joined {channel}: {e}\n{proc.log()}") from None
    return line.nick


async def ask(client: IrcClient, target: str, text: str, bot: str, proc: Proc) -> Line:
    """Send ``text`` to ``target`` (a channel, or the bot) and return the bot's answer."""
    where = target if target.startswith("#") else client.nick
    mark = client.mark()
    await client.privmsg(target, text)
    try:
        return await client.reply(bot, where, since=mark, timeout=WAIT)
    except AssertionError as e:
        raise AssertionError(f"no answer to {text!r}: {e}\n{proc.log()}") from None


@contextlib.asynccontextmanager
async def clients(port: int, *nicks: str, channel: str, **kw: Any) -> AsyncIterator[Any]:
    made = []
    try:
        for nick in nicks:
            made.append(await IrcClient.connect(port, nick, **kw))
            await made[-1].join(channel)
        yield made
    finally:
        await asyncio.gather(*(c.close() for c in made))


class Main:
    def __init__(self, alice: IrcClient, bob: IrcClient, proc: Proc, nick: str) -> None:
        self.alice, self.bob, self.proc, self.nick = alice, bob, proc, nick


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def main(bus: Bus, ngircd: Ngircd) -> AsyncIterator[Main]:
    """alice and bob in #eevee on the plain ngircd, and the bot ``irc.test`` (defaults)."""
    async with clients(ngircd.port, "alice", "bob", channel=CHANNEL) as (alice, bob):
        await bob.join("#evil")
        mark = alice.mark()
        proc = await bus.connector("test", plain(ngircd, nick="eevee", channels=[CHANNEL]))
        nick = await joined(alice, CHANNEL, proc, since=mark)
        assert nick == "eevee"
        try:
            yield Main(alice, bob, proc, nick)
        finally:
            await proc.stop()


# -- the main bot: plain ngircd, default settings ---------------------------------------------


async def test_echo_in_channel(bus: Bus, main: Main) -> None:
    inbound = await bus.collect("chat.in.irc.test.>", ChatMessage)
    bob_mark = main.bob.mark()
    reply = await ask(main.alice, CHANNEL, "!echo hi", main.nick, main.proc)
    assert reply.text == "hi"
    heard = await main.bob.reply(main.nick, CHANNEL, since=bob_mark)  # the room hears it too
    assert heard.text == "hi"
    msg = (await asyncio.wait_for(inbound.get(), WAIT)).body
    assert (msg.platform, msg.network, msg.room, msg.text) == ("irc", "test", CHANNEL, "!echo hi")
    assert (msg.user.id, msg.user.name, msg.private) == ("alice", "alice", False)
    assert (msg.user.host or "").endswith("@127.0.0.1"), msg.user


async def test_private_echo(bus: Bus, main: Main) -> None:
    inbound = await bus.collect("chat.in.irc.test.>", ChatMessage)
    bob_mark = main.bob.mark()
    reply = await ask(main.alice, main.nick, "!echo hi", main.nick, main.proc)
    assert (reply.params[0], reply.text) == ("alice", "hi")
    msg = (await asyncio.wait_for(inbound.get(), WAIT)).body
    assert (msg.room, msg.private, msg.user.id) == ("alice", True, "alice")
    assert await ask(main.alice, main.nick, "echo no prefix", main.nick, main.proc)
    assert not main.bob.messages(since=bob_mark, source=main.nick)  # nothing in the channel


def _long_text() -> str:
    words = ["alpha", "béta", "ça", "漢字", "🎉", "naïve", "Ωmega", "x" * 40]
    text = " ".join(words[i % len(words)] for i in range(120))
    text += " " + "é" * 300 + "漢" * 200 + "🎉" * 50  # 2,200 bytes with no space to split at
    text += " " + " ".join(words[i % len(words)] for i in range(200))
    return text[:2000].rstrip()


async def test_long_reply_is_split_into_valid_lines(bus: Bus, main: Main) -> None:
    text = _long_text()
    assert len(text) == 2000
    mark = main.alice.mark()
    # 2,000 characters do not fit in one IRC line: the question goes straight on the bus.
    msg = ChatMessage(
        platform="irc",
        network="test",
        room=CHANNEL,
        user=ChatUser(id="alice", name="alice", host="~alice@127.0.0.1"),
        text="!echo " + text,
    )
    await bus.ipc.publish(bus.subjects.chat_in("irc", "test", CHANNEL), msg)
    want = re.sub(r"\s+", "", text)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20  # paced by the default flood control
    got = ""
    while loop.time() < deadline:
        lines = main.alice.messages(since=mark, source=main.nick, target=CHANNEL)
        got = re.sub(r"\s+", "", "".join(m.text for m in lines))
        if got == want or (got and not want.startswith(got)):
            break
        await asyncio.sleep(0.1)
    lines = main.alice.messages(since=mark, source=main.nick, target=CHANNEL)
    assert len(lines) >= 5, [m.raw for m in lines]
    for m in lines:
        assert len(m.data) + 2 <= 512, f"{len(m.data) + 2} bytes: {m.raw}"
        m.data.decode("utf-8")  # strict: no character cut in two
        assert m.text.strip(), m.raw
    assert got == want  # complete and in order (only whitespace may differ at the cuts)
    joined_text = "".join(m.text for m in lines)
    assert "\ufffd" not in joined_text


async def test_crlf_injection(bus: Bus, main: Main) -> None:
    alice, bob = main.alice, main.bob
    mark, bob_mark = alice.mark(), bob.mark()
    out = bus.subjects.chat_out("irc", "test")

    def say(target: str, text: str) -> OutgoingMessage:
        return OutgoingMessage(platform="irc", network="test", target=target, text=text)

    await bus.ipc.publish(out, say(CHANNEL, "before\r\nQUIT :pwned\nJOIN #evil\rafter"))
    await bus.ipc.publish(out, say(CHANNEL + "\r\nJOIN #evil", "target injection"))
    await bus.ipc.publish(out, say(CHANNEL, "x \r\nPRIVMSG bob :private\r\n"))
    marker = "marker-" + uuid.uuid4().hex[:8]
    await bus.ipc.publish(out, say(CHANNEL, marker))
    await alice.wait(lambda m: m.command == "PRIVMSG" and m.text == marker, since=mark)
    await asyncio.sleep(0.3)

    texts = [m.text for m in alice.messages(since=mark, source=main.nick)]
    assert any("QUIT :pwned" in t for t in texts), texts  # sent as text, not as a command
    assert any("JOIN #evil" in t for t in texts), texts
    assert not [m.raw for m in alice.lines[mark:] if m.nick == main.nick and m.command == "QUIT"]
    evil = [m.raw for m in bob.lines[bob_mark:] if m.nick == main.nick and m.command == "JOIN"]
    assert not evil, evil
    assert not bob.messages(since=bob_mark, source=main.nick, target="bob")
    assert main.nick in await alice.names(CHANNEL)
    assert main.nick not in await bob.names("#evil")
    assert main.proc.proc.returncode is None
    assert (await ask(alice, CHANNEL, "!echo still here", main.nick, main.proc)).text == (
        "still here"
    )


async def test_user_text_never_makes_the_bot_send_ctcp(bus: Bus, main: Main) -> None:
    alice, bob = main.alice, main.bob
    bob_mark = bob.mark()
    version = await ask(alice, CHANNEL, "!echo \x01VERSION\x01", main.nick, main.proc)
    assert version.text == "\u2401VERSION\u2401"  # ␁VERSION␁: shown, not a CTCP request
    action = await ask(alice, CHANNEL, "!echo \x01ACTION waves\x01", main.nick, main.proc)
    assert action.text == "\u2401ACTION waves\u2401"
    private = await ask(alice, main.nick, "!echo \x01PING 1\x01 \x07", main.nick, main.proc)
    assert private.text == "\u2401PING 1\u2401 \u2407"

    # Straight on the bus: a notice and an action to the room, a message to a nick.
    out = bus.subjects.chat_out("irc", "test")
    for target, style in [(CHANNEL, "notice"), (CHANNEL, "action"), ("bob", "message")]:
        msg = OutgoingMessage(
            platform="irc",
            network="test",
            target=target,
            text="\x01VERSION\x01\nline two \x01",
            style=MessageStyle(style),
        )
        await bus.ipc.publish(out, msg)
    for target, text in [(CHANNEL, "\x01ACTION line two \u2401\x01"), ("bob", "line two \u2401")]:
        await bob.wait(
            lambda m, t=target, x=text: m.nick == main.nick and m.params[0] == t and m.text == x,
            since=bob_mark,
            timeout=WAIT,
        )
    sent = [
        (m.command, m.params[0], m.text)
        for m in bob.lines[bob_mark:]
        # (bob may still receive lines of an earlier test: each line of this one holds ␁)
        if m.nick == main.nick and m.command in ("PRIVMSG", "NOTICE") and "\u2401" in m.text
    ]
    # In order per target (flood control serves the targets round-robin).
    assert [m for m in sent if m[1] == CHANNEL] == [
        ("PRIVMSG", CHANNEL, "\u2401VERSION\u2401"),  # the first echo (bob is in the room)
        ("PRIVMSG", CHANNEL, "\u2401ACTION waves\u2401"),
        ("NOTICE", CHANNEL, "\u2401VERSION\u2401"),
        ("NOTICE", CHANNEL, "line two \u2401"),
        ("PRIVMSG", CHANNEL, "\x01ACTION \u2401VERSION\u2401\x01"),  # the one CTCP: an action
        ("PRIVMSG", CHANNEL, "\x01ACTION line two \u2401\x01"),
    ], sent
    assert [m for m in sent if m[1] != CHANNEL] == [
        ("PRIVMSG", "bob", "\u2401VERSION\u2401"),
        ("PRIVMSG", "bob", "line two \u2401"),
    ], sent
    ctcp = [
        m.raw
        for m in bob.lines[bob_mark:]
        if m.nick == main.nick and "\x01" in m.text and not m.text.startswith("\x01ACTION ")
    ]
    assert not ctcp, ctcp


async def test_invalid_rooms_and_targets_are_refused(bus: Bus, main: Main) -> None:
    alice, bob = main.alice, main.bob
    mark, bob_mark = alice.mark(), bob.mark()
    ctl = bus.subjects.chat_ctl("irc", "test")

    async def control(**request: Any) -> ConnectorControlResult:
        reply = await bus.ipc.request(
            ctl, ConnectorControl(**request), ConnectorControlResult, timeout=WAIT
        )
        return reply.body

    for action, room, why in [
        ("join", "0", "JOIN 0 would leave every channel"),
        ("part", "0", "JOIN 0 would leave every channel"),
        ("join", "#eevee,#evil", "comma"),
        ("join", "#a b", "space"),
        ("join", "#a\x07", "control character"),
        ("join", "evil", "channel prefix"),
        ("names", "#" + "x" * 300, "bytes long"),
    ]:
        result = await control(action=action, room=room)
        assert not result.ok, (action, room, result)
        assert why in result.message, result.message
        assert result.message.startswith(action), result.message
    assert "digit" in (await control(action="nick", nick="0")).message

    dead = await bus.collect(bus.subjects.dlq(bus.subjects.chat_out("irc", "test")), DeadLetter)
    out = bus.subjects.chat_out("irc", "test")
    for target in ("#eevee,#evil", "0", "#eevee bob", "bob,alice"):
        msg = OutgoingMessage(platform="irc", network="test", target=target, text="nope")
        await bus.ipc.publish(out, msg)
        letter = (await asyncio.wait_for(dead.get(), WAIT)).body
        assert letter.reason.startswith("invalid IRC target"), letter
        assert (letter.receiver, letter.subject) == ("irc.test", out)
        assert (
            OutgoingMessage.model_validate(Envelope.model_validate_json(letter.payload).body).target
            == target
        )

    assert (await ask(alice, CHANNEL, "!echo still here", main.nick, main.proc)).text == (
        "still here"
    )
    assert main.nick in await alice.names(CHANNEL)  # still in its channel, never parted
    from_bot = [m for m in alice.lines[mark:] + bob.lines[bob_mark:] if m.nick == main.nick]
    wrong = [
        m.raw
        for m in from_bot
        if "nope" in m.raw
        or m.command == "PART"
        or (m.command == "JOIN" and m.params[0].lower() != CHANNEL)  # bob may see its join late
    ]
    assert not wrong, wrong


# -- TLS --------------------------------------------------------------------------------------


async def test_tls_verified_with_ca_file(bus: Bus, ngircd_tls: Ngircd) -> None:
    assert ngircd_tls.tls_port
    assert ngircd_tls.cert
    ctx = tls_context(ngircd_tls.cert)
    async with clients(ngircd_tls.tls_port, "tlsalice", channel="#tls", tls=ctx) as (alice,):
        settings = {
            "host": "localhost",
            "port": ngircd_tls.tls_port,
            "tls": True,
            "tls_verify": True,
            "ca_file": str(ngircd_tls.cert),
            "nick": "eeveetls",
            "channels": ["#tls"],
        }
        mark = alice.mark()
        proc = await bus.connector("tls", settings)
        try:
            nick = await joined(alice, "#tls", proc, since=mark)
            assert nick == "eeveetls"
            whois = await alice.whois(nick)
            assert any(m.command == "275" for m in whois), [m.raw for m in whois]  # via SSL
            assert (await ask(alice, "#tls", "!echo hi", nick, proc)).text == "hi"
        finally:
            await proc.stop()


async def test_tls_verify_rejects_an_unknown_certificate(bus: Bus, ngircd_tls: Ngircd) -> None:
    assert ngircd_tls.tls_port
    ctx = tls_context(ngircd_tls.cert)
    async with clients(ngircd_tls.tls_port, "tlsbob", channel="#tls2", tls=ctx) as (bob,):
        events = await bus.events("tlsbad")
        settings = {
            "host": "localhost",
            "port": ngircd_tls.tls_port,
            "tls": True,
            "tls_verify": True,  # and no ca_file: the self-signed certificate is unknown
            "nick": "eeveeuntrusted",
            "channels": ["#tls2"],
        }
        proc = await bus.connector("tlsbad", settings)
        try:
            await asyncio.sleep(2.0)
            assert "eeveeuntrusted" not in await bob.names("#tls2")
            kinds = [events.get_nowait().body.event for _ in range(events.qsize())]
            assert "connected" not in kinds, kinds
            assert b"certificate" in proc.stderr.lower(), proc.log()
        finally:
            await proc.stop()


# -- reconnect, nick collision ----------------------------------------------------------------


async def test_reconnects_after_the_server_restarts(
    bus: Bus, ngircd_factory: Callable[..., Ngircd]
) -> None:
    server = ngircd_factory()
    settings = plain(server, nick="eeveerc", channels=["#r"], reconnect_min=0.2, reconnect_max=1.0)
    proc: Proc | None = None
    try:
        async with clients(server.port, "rcalice", channel="#r") as (alice,):
            events = await bus.events("recon")
            mark = alice.mark()
            proc = await bus.connector("recon", settings)
            nick = await joined(alice, "#r", proc, since=mark)
            assert (await ask(alice, "#r", "!echo one", nick, proc)).text == "one"

            server.kill()
            while True:
                ev = (await asyncio.wait_for(events.get(), WAIT)).body
                if ev.event == "disconnected":
                    break
            for _ in range(2):  # the bus side stays alive while IRC is down
                pong = await bus.ipc.request(
                    bus.subjects.operator_ping("irc.recon"), Ping(), Pong, timeout=2.0
                )
                assert pong.body.operator == "irc.recon"
                await asyncio.sleep(0.7)
            server.start()  # same port
        async with clients(server.port, "rcalice", channel="#r") as (alice,):
            nick = "eeveerc"
            deadline = asyncio.get_running_loop().time() + WAIT
            while nick not in await alice.names("#r"):  # it may have rejoined before alice
                assert asyncio.get_running_loop().time() < deadline, f"no rejoin\n{proc.log()}"
                await asyncio.sleep(0.1)
            assert (await ask(alice, "#r", "!echo two", nick, proc)).text == "two"
            assert proc.proc.returncode is None
            assert proc.pid == proc.proc.pid  # the same process, never restarted
            kinds = [events.get_nowait().body.event for _ in range(events.qsize())]
            assert "connected" in kinds, kinds
    finally:
        if proc is not None:
            await proc.stop()


async def test_nick_collision_uses_an_alternate_then_reclaims(
    bus: Bus, ngircd_factory: Callable[..., Ngircd]
) -> None:
    server = ngircd_factory()
    settings = plain(
        server,
        nick="eevee",
        alt_nicks=["eeveebot"],
        channels=["#nc"],
        reclaim_nick_interval=1.0,
    )
    async with clients(server.port, "eevee", "watcher", channel="#nc") as (holder, watcher):
        mark = watcher.mark()
        proc = await bus.connector("nc", settings)
        try:
            nick = await joined(watcher, "#nc", proc, since=mark)
            assert nick == "eeveebot"
            assert (await ask(watcher, "#nc", "!echo hi", nick, proc)).text == "hi"

            mark = watcher.mark()
            await holder.close()  # "eevee" is free again: the bot takes it back
            line = await watcher.wait(
                lambda m: m.command == "NICK" and m.nick == "eeveebot", since=mark, timeout=6
            )
            assert line.text == "eevee"
            assert (await ask(watcher, "#nc", "!echo back", "eevee", proc)).text == "back"
        finally:
            await proc.stop()


# -- SASL (InspIRCd + Anope) ------------------------------------------------------------------


async def test_sasl_plain_logs_in(bus: Bus, inspircd_anope: InspircdAnope) -> None:
    account, password = SASL_ACCOUNT
    async with clients(inspircd_anope.port, "carol", channel="#sasl") as (carol,):
        settings = {
            "host": "127.0.0.1",
            "port": inspircd_anope.port,
            "nick": "eeveesasl",
            "sasl_mechanism": "PLAIN",
            "sasl_username": account,
            "sasl_password": password,
            "channels": ["#sasl"],
        }
        mark = carol.mark()
        proc = await bus.connector("sasl", settings)
        try:
            nick = await joined(carol, "#sasl", proc, since=mark)
            whois = await carol.whois(nick)
            logged_in = [m for m in whois if m.command == "330"]
            assert logged_in, [m.raw for m in whois]
            assert logged_in[0].params[2] == account, logged_in[0].raw
            assert (await ask(carol, "#sasl", "!echo hi", nick, proc)).text == "hi"
        finally:
            await proc.stop()


async def test_sasl_wrong_password_fails_without_a_storm(
    bus: Bus, inspircd_anope: InspircdAnope
) -> None:
    account, _ = SASL_ACCOUNT
    events = await bus.events("saslbad")
    settings = {
        "host": "127.0.0.1",
        "port": inspircd_anope.port,
        "nick": "eeveebadpw",
        "sasl_mechanism": "PLAIN",
        "sasl_username": account,
        "sasl_password": "not-the-password",
        "channels": ["#sasl"],
    }
    proc = await bus.connector("saslbad", settings)
    try:
        seen: list[ChatEvent] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while not any(
            e.event == "disconnected" and "SASL authentication failed" in (e.text or "")
            for e in seen
        ):
            left = deadline - loop.time()
            try:
                seen.append((await asyncio.wait_for(events.get(), max(left, 0.01))).body)
            except TimeoutError:
                raise AssertionError(
                    f"no 'SASL authentication failed' event; got {seen}\n{proc.log()}"
                ) from None
        before = len(seen)
        await asyncio.sleep(5.0)
        later = seen[before:] + [events.get_nowait().body for _ in range(events.qsize())]
        connected = [e for e in seen + later if e.event == "connected"]
        failures = [e for e in later if "SASL" in (e.text or "")]
        assert len(connected) <= 2, connected
        assert len(failures) <= 2, failures  # attempts in the 5 s after the first failure
        assert b"SASL authentication failed" in proc.stderr, proc.log()
        assert b"error" in proc.stderr.lower(), proc.log()
    finally:
        await proc.stop()
