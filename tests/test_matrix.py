"""The Matrix connector end to end: a real Synapse, real operator processes, a real client.

Router and echo run once for the module (tests/chat_system.ChatSystem); each test starts
``python -m operators.matrix`` as ``matrix.<network>`` for a bot account of its own on the
session's Synapse (tests/matrix_server.py), and talks to it from matrix-nio clients.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

pytest.register_assert_rewrite("tests.matrix_server")

from eeveepy.bus.streams import ensure_chat_streams  # noqa: E402
from eeveepy.protocol.models import (  # noqa: E402
    ChatEvent,
    ChatEventType,
    ChatMessage,
    ConnectorControl,
    ConnectorControlResult,
    DeadLetter,
    MessageStyle,
    OutgoingMessage,
    Ping,
    Pong,
)
from tests.chat_system import ChatSystem  # noqa: E402
from tests.matrix_server import (  # noqa: E402
    MatrixUser,
    Registered,
    Seen,
    Synapse,
    matrix_users,
)
from tests.operator_procs import OperatorProc  # noqa: E402

pytest_plugins = ["tests.matrix_server"]

WAIT = 10.0


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bus(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ChatSystem]:
    b = ChatSystem(nats_url, tmp_path_factory.mktemp("matrix"), platform="matrix")
    await b.start()
    try:
        await ensure_chat_streams(b.io.nc.jetstream(), b.prefix)  # as under `eevee up`
        await b.commands()
        yield b
    finally:
        await b.close()


def bot_settings(server: Synapse, bot: Registered, **more: Any) -> dict[str, Any]:
    return {
        "homeserver": server.url,
        "user_id": bot.user_id,
        "password": bot.password,
        "egress_messages": 0,
        "reconnect_min": 0.2,
        "reconnect_max": 1.0,
        "request_timeout": 5.0,
        "sync_timeout": 2.0,
        **more,
    }


def reply_to(seen: Seen) -> str | None:
    r = seen.relates.get("m.in_reply_to")
    return r.get("event_id") if isinstance(r, dict) else None


async def answer(
    user: MatrixUser, bot: str, room: str, text: str, proc: OperatorProc, **content: Any
) -> tuple[str, Seen]:
    """Send ``text`` in ``room``; the command's event id and the bot's first message after."""
    mark = user.mark()
    event_id = await user.send(room, text, **content)
    try:
        got = await user.wait(
            lambda s: s.sender == bot and s.room == room and s.body is not None, since=mark
        )
    except AssertionError as e:
        raise AssertionError(f"no answer to {text!r}: {e}\n{proc.log()}") from None
    return event_id, got


@dataclass
class Setup:
    server: Synapse
    bot: Registered
    alice: MatrixUser
    room: str
    proc: OperatorProc
    network: str


@pytest_asyncio.fixture(loop_scope="session")
async def setup(
    bus: ChatSystem, synapse: Synapse, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    """Make a bot account, alice in a room with it, and its connector (settings extra)."""
    stack: list[Any] = []

    async def make(start: bool = True, **extra: Any) -> Setup:
        bot, alice_reg = synapse.register(), synapse.register()
        users = matrix_users(synapse, tmp_path / "clients", alice_reg)
        (alice,) = await users.__aenter__()
        stack.append(users)
        room = await alice.create_room(
            invite=[bot.user_id], encrypted=extra.pop("encrypted", False)
        )
        network = "n" + uuid.uuid4().hex[:8]
        settings = bot_settings(synapse, bot, rooms=[room], **extra)
        proc = None
        if start:
            proc = await bus.connector(network, settings)
        s = Setup(synapse, bot, alice, room, proc, network)  # type: ignore[arg-type]
        if proc is not None:
            await joined(s)
        return s

    try:
        yield make
    finally:
        for users in reversed(stack):
            await users.__aexit__(None, None, None)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def main(
    bus: ChatSystem, synapse: Synapse, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Setup]:
    """The module's bot, with alice (on its invite allow-list) in a room with it."""
    bot, alice_reg = synapse.register(), synapse.register()
    async with matrix_users(synapse, tmp_path_factory.mktemp("main"), alice_reg) as (alice,):
        room = await alice.create_room(invite=[bot.user_id])
        network = "main" + uuid.uuid4().hex[:6]
        settings = bot_settings(synapse, bot, rooms=[room], invite_allow=[alice.user_id])
        proc = await bus.connector(network, settings)
        s = Setup(synapse, bot, alice, room, proc, network)
        try:
            await joined(s)
            yield s
        finally:
            await proc.stop()


async def joined(s: Setup) -> None:
    try:
        await s.alice.wait(
            lambda e: (
                e.event.get("type") == "m.room.member"
                and e.event.get("state_key") == s.bot.user_id
                and e.content.get("membership") == "join"
                and e.room == s.room
            )
        )
    except AssertionError as e:
        raise AssertionError(f"the bot never joined: {e}\n{s.proc.log()}") from None


async def wait_event(
    events: asyncio.Queue[Any], kind: ChatEventType, proc: OperatorProc
) -> ChatEvent:
    """The next chat event of ``kind`` (the others are skipped)."""
    try:
        while (ev := (await asyncio.wait_for(events.get(), WAIT)).body).event is not kind:
            pass
    except TimeoutError:
        raise AssertionError(f"no {kind.value} event\n{proc.log()}") from None
    return ev


async def connected(events: asyncio.Queue[Any], proc: OperatorProc) -> None:
    await wait_event(events, ChatEventType.CONNECTED, proc)


# -- the basics --------------------------------------------------------------------------------


async def test_echo_is_a_reply_with_html(bus: ChatSystem, main: Setup) -> None:
    s = main
    inbound = await bus.collect(f"chat.in.matrix.{s.network}.>", ChatMessage)
    event_id, got = await answer(s.alice, s.bot.user_id, s.room, "!echo hi **there**", s.proc)
    assert got.body == "hi **there**"
    assert got.content["msgtype"] == "m.text"
    assert got.content["format"] == "org.matrix.custom.html"
    assert got.content["formatted_body"] == "hi <strong>there</strong>"
    assert reply_to(got) == event_id
    msg = (await asyncio.wait_for(inbound.get(), WAIT)).body
    assert msg.room == s.room
    assert msg.user.id == msg.user.account == s.alice.user_id
    assert msg.message_id == event_id
    assert msg.text == "!echo hi **there**"


async def test_help_and_styles(bus: ChatSystem, main: Setup) -> None:
    s = main
    _, got = await answer(s.alice, s.bot.user_id, s.room, "!help", s.proc)
    assert "echo" in (got.body or "")
    inbound = await bus.collect(f"chat.in.matrix.{s.network}.>", ChatMessage)
    await s.alice.send(s.room, "waves", msgtype="m.emote")
    await s.alice.send(s.room, "a notice", msgtype="m.notice")
    first = (await asyncio.wait_for(inbound.get(), WAIT)).body
    second = (await asyncio.wait_for(inbound.get(), WAIT)).body
    assert (first.style, first.text) == (MessageStyle.ACTION, "waves")
    assert (second.style, second.text) == (MessageStyle.NOTICE, "a notice")


async def test_command_in_thread_is_answered_in_the_thread(main: Setup) -> None:
    s = main
    root = await s.alice.send(s.room, "a thread about things")
    rel = {"rel_type": "m.thread", "event_id": root, "is_falling_back": True,
           "m.in_reply_to": {"event_id": root}}  # fmt: skip
    event_id, got = await answer(
        s.alice, s.bot.user_id, s.room, "!echo in thread", s.proc, **{"m.relates_to": rel}
    )
    assert got.body == "in thread"
    assert got.relates.get("rel_type") == "m.thread"
    assert got.relates.get("event_id") == root
    assert reply_to(got) == event_id


# -- invites, control --------------------------------------------------------------------------


async def test_invites_accepted_from_the_allow_list_only(
    bus: ChatSystem, synapse: Synapse, main: Setup, tmp_path: Path
) -> None:
    """alice is on the allow-list by user id; carol, on the same server, is not."""
    s = main
    events = await bus.events(s.network)
    async with matrix_users(synapse, tmp_path / "carol", synapse.register()) as (carol,):
        refused = await carol.create_room(invite=[s.bot.user_id])
        allowed = await s.alice.create_room(invite=[s.bot.user_id])
        await joined(Setup(s.server, s.bot, s.alice, allowed, s.proc, s.network))
        _, got = await answer(s.alice, s.bot.user_id, allowed, "!echo invited", s.proc)
        assert got.body == "invited"
        await carol.wait(
            lambda e: (
                e.room == refused
                and e.event.get("state_key") == s.bot.user_id
                and e.content.get("membership") == "leave"
            )
        )
        invites = {}
        while not {refused, allowed} <= invites.keys():
            ev = await wait_event(events, ChatEventType.INVITE, s.proc)
            invites[ev.room] = ev
        assert invites[refused].text == "refused"
        assert invites[refused].user is not None
        assert invites[refused].user.id == carol.user_id
        assert invites[allowed].text == "accepted"


async def test_control_join_names_part(bus: ChatSystem, main: Setup) -> None:
    s = main
    other = await s.alice.create_room(invite=[])
    s.server.api("PUT", f"/rooms/{other}/state/m.room.join_rules/", s.alice.client.access_token,
                 {"join_rule": "public"})  # fmt: skip
    subject = bus.subjects.chat_ctl("matrix", s.network)

    async def ctl(**req: Any) -> ConnectorControlResult:
        env = await bus.io.request(
            subject, ConnectorControl(**req), ConnectorControlResult, timeout=WAIT
        )
        return env.body

    joined_r = await ctl(action="join", room=other)
    assert joined_r.ok, joined_r.message
    names = await ctl(action="names", room=other)
    assert names.ok
    assert set(names.users) == {s.alice.user_id, s.bot.user_id}
    nick = await ctl(action="nick", nick="Eevee Bot")
    assert nick.ok, nick.message
    parted = await ctl(action="part", room=other)
    assert parted.ok, parted.message
    bad = await ctl(action="join", room="not a room")
    assert not bad.ok
    assert "not a room id" in bad.message


async def test_invalid_targets_are_dead_lettered(bus: ChatSystem, main: Setup) -> None:
    s = main
    out = bus.subjects.chat_out("matrix", s.network)
    dead = await bus.collect(bus.subjects.dlq(out), DeadLetter)
    for target, private in (("general", False), ("@bob:localhost", False), (s.room, True)):
        msg = OutgoingMessage(
            platform="matrix", network=s.network, target=target, text="nope", private=private
        )
        await bus.io.publish(out, msg)
        letter = (await asyncio.wait_for(dead.get(), WAIT)).body
        assert letter.reason.startswith("invalid Matrix"), letter
        assert letter.receiver == f"matrix.{s.network}"
    # a room the bot is not in: refused by the homeserver, dropped (not retried forever)
    mark = s.alice.mark()
    stranger = await s.alice.create_room(invite=[])
    await bus.io.publish(
        out, OutgoingMessage(platform="matrix", network=s.network, target=stranger, text="x")
    )
    _, got = await answer(s.alice, s.bot.user_id, s.room, "!echo still here", s.proc)
    assert got.body == "still here"
    assert not s.alice.messages(s.bot.user_id, stranger, since=mark)


# -- restarts, backlog, bursts -----------------------------------------------------------------


async def test_restart_answers_each_command_exactly_once(
    bus: ChatSystem, setup: Callable[..., Any]
) -> None:
    s: Setup = await setup()
    network_settings = bot_settings(s.server, s.bot, rooms=[s.room])
    await answer(s.alice, s.bot.user_id, s.room, "!echo before", s.proc)
    mark = s.alice.mark()
    await s.alice.send(s.room, "!echo during")
    await s.proc.stop(signal.SIGKILL)  # whatever it was doing with "during"
    await s.alice.send(s.room, "!echo down")
    proc = await bus.connector(s.network, network_settings)
    await answer(s.alice, s.bot.user_id, s.room, "!echo after", proc)
    await asyncio.sleep(1.0)  # room for a duplicate to show
    bodies = [m.body for m in s.alice.messages(s.bot.user_id, s.room, since=mark)]
    assert sorted(b for b in bodies if b) == ["after", "down", "during"], (bodies, proc.log())
    await proc.stop()


async def test_a_refused_sync_position_starts_afresh(
    bus: ChatSystem, setup: Callable[..., Any]
) -> None:
    """A stored sync token the homeserver refuses (a reset server, a damaged file) must not
    make every start fail: the connector drops it, says so, and answers again."""
    s: Setup = await setup()
    await answer(s.alice, s.bot.user_id, s.room, "!echo before", s.proc)
    await s.proc.stop()
    stored = bus.tmp / "data" / f"matrix.{s.network}" / "sync.json"
    data = json.loads(stored.read_text(encoding="utf-8"))
    stored.write_text(json.dumps({**data, "next_batch": "not-a-token"}), encoding="utf-8")
    proc = await bus.connector(s.network, bot_settings(s.server, s.bot, rooms=[s.room]))
    _, got = await answer(s.alice, s.bot.user_id, s.room, "!echo after", proc)
    assert got.body == "after"
    assert "refused the stored sync position" in proc.log()
    assert json.loads(stored.read_text(encoding="utf-8"))["next_batch"] != "not-a-token"
    await proc.stop()


async def test_backlog_from_before_the_first_start_is_not_answered(
    bus: ChatSystem, setup: Callable[..., Any]
) -> None:
    s: Setup = await setup(start=False)
    s.server.api("POST", f"/join/{s.room}", s.bot.access_token, {})  # the bot's account joins
    await s.alice.send(s.room, "!echo old")
    mark = s.alice.mark()
    events = await bus.events(s.network)
    proc = await bus.connector(s.network, bot_settings(s.server, s.bot, rooms=[s.room]))
    await connected(events, proc)  # what is said from now on is not backlog
    _, got = await answer(s.alice, s.bot.user_id, s.room, "!echo new", proc)
    assert got.body == "new"
    await asyncio.sleep(0.5)
    bodies = [m.body for m in s.alice.messages(s.bot.user_id, s.room, since=mark)]
    assert bodies == ["new"], proc.log()
    await proc.stop()


async def test_commands_older_than_max_command_age_are_not_run(
    bus: ChatSystem, setup: Callable[..., Any]
) -> None:
    s: Setup = await setup(max_command_age=1.0)
    await answer(s.alice, s.bot.user_id, s.room, "!echo first", s.proc)
    await s.proc.stop()
    mark = s.alice.mark()
    await s.alice.send(s.room, "!echo stale")
    await asyncio.sleep(1.5)  # older than max_command_age when the bot reads it
    settings = bot_settings(s.server, s.bot, rooms=[s.room], max_command_age=1.0)
    proc = await bus.connector(s.network, settings)
    _, got = await answer(s.alice, s.bot.user_id, s.room, "!echo fresh", proc)
    assert got.body == "fresh"
    await asyncio.sleep(0.5)
    assert [m.body for m in s.alice.messages(s.bot.user_id, s.room, since=mark)] == ["fresh"]
    assert "old messages not published" in proc.log(100_000)
    await proc.stop()


async def test_encrypted_room_after_a_restart(bus: ChatSystem, setup: Callable[..., Any]) -> None:
    """The device and its keys are kept in the data directory: after a restart the bot is
    the same device, reads what was encrypted for it meanwhile and answers encrypted."""
    s: Setup = await setup(encrypted=True)
    await answer(s.alice, s.bot.user_id, s.room, "!echo one", s.proc)
    await s.proc.stop()
    mark = s.alice.mark()
    await s.alice.send(s.room, "!echo while away")
    proc = await bus.connector(s.network, bot_settings(s.server, s.bot, rooms=[s.room]))
    _, got = await answer(s.alice, s.bot.user_id, s.room, "!echo two", proc)
    await asyncio.sleep(0.3)
    bodies = [m.body for m in s.alice.messages(s.bot.user_id, s.room, since=mark)]
    assert bodies == ["while away", "two"], proc.log()
    assert "logged in with the stored token" in proc.log(100_000)
    wire = s.server.api(
        "GET", f"/rooms/{s.room}/event/{got.event['event_id']}", s.alice.client.access_token
    )
    assert wire["type"] == "m.room.encrypted"
    await proc.stop()


async def test_burst_of_50_answered_completely_and_in_order(setup: Callable[..., Any]) -> None:
    """A sync returns 10 events per room by default: without back-filling a limited
    timeline, some of a burst are lost (PEERS.md section 3). A limit of 1 makes every sync
    that brings more than one event limited."""
    s: Setup = await setup(timeline_limit=1)
    mark = s.alice.mark()
    texts = [f"b{n}" for n in range(50)]
    for text in texts:
        await s.alice.send(s.room, f"!echo {text}")
    try:
        await s.alice.wait(lambda e: e.sender == s.bot.user_id and e.body == texts[-1], since=mark)
        deadline = asyncio.get_running_loop().time() + WAIT
        while len(s.alice.messages(s.bot.user_id, s.room, since=mark)) < len(texts):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
    except AssertionError:
        raise AssertionError(f"burst not answered\n{s.proc.log()}") from None
    bodies = [m.body for m in s.alice.messages(s.bot.user_id, s.room, since=mark)]
    assert bodies == texts
    assert "timeline gap filled" in s.proc.log(1_000_000)  # the case under test happened
    await s.proc.stop()


async def test_edits_redactions_and_hostile_events_are_not_commands(
    bus: ChatSystem, main: Setup
) -> None:
    s = main
    inbound = await bus.collect(f"chat.in.matrix.{s.network}.>", ChatMessage)
    mark = s.alice.mark()
    first = await s.alice.send(s.room, "hello")
    edit = {
        "msgtype": "m.text",
        "body": "* !echo edited",
        "m.new_content": {"msgtype": "m.text", "body": "!echo edited"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": first},
    }
    assert await s.alice.send_raw(s.room, "m.room.message", edit)
    assert await s.alice.send_raw(s.room, "m.room.redaction", {"redacts": first})
    hostile: list[dict[str, Any]] = [
        {"msgtype": "m.text", "body": "!echo " + "x" * 60_000},
        {"msgtype": "m.text", "body": 12},
        {"msgtype": "m.text", "body": {"nested": ["!echo"]}},
        {"msgtype": "m.weird", "body": "!echo unknown msgtype"},
        {"body": "!echo no msgtype"},
        {"msgtype": "m.text", "body": "!echo rel", "m.relates_to": "not an object"},
        {"msgtype": "m.text", "body": "!echo mentions", "m.mentions": {"user_ids": "x"}},
    ]
    sent = [await s.alice.send_raw(s.room, "m.room.message", c) for c in hostile]
    assert sum(e is not None for e in sent) >= 4, sent  # what Synapse lets through
    await s.alice.send_raw(s.room, "m.room.message", {"msgtype": "m.text", "body": "!echo alive"})
    await s.alice.wait(lambda e: e.sender == s.bot.user_id and e.body == "alive", since=mark)
    texts = []
    while not inbound.empty():
        texts.append(inbound.get_nowait().body.text)
    assert "!echo edited" not in texts
    assert "* !echo edited" not in texts
    assert "!echo unknown msgtype" not in texts
    assert "!echo no msgtype" not in texts
    assert texts[0] == "hello"
    assert texts[-1] == "!echo alive"
    bodies = [m.body for m in s.alice.messages(s.bot.user_id, s.room, since=mark)]
    assert "edited" not in bodies
    assert "alive" in bodies
    assert s.proc.proc.returncode is None


# -- the homeserver: rate limits, restarts, encryption -----------------------------------------


async def test_rate_limit_429_waited_out_with_no_reply_lost(main: Setup) -> None:
    s = main
    s.server.limit_messages(s.bot.user_id, per_second=2, burst=1)  # rc_message for the bot
    texts = [f"r{n}" for n in range(4)]
    mark = s.alice.mark()
    for text in texts:
        await s.alice.send(s.room, f"!echo {text}")
    try:
        await s.alice.wait(lambda e: e.sender == s.bot.user_id and e.body == texts[-1], since=mark)
    except AssertionError:
        raise AssertionError(f"replies missing\n{s.proc.log()}") from None
    assert [m.body for m in s.alice.messages(s.bot.user_id, s.room, since=mark)] == texts
    assert "rate limited by the homeserver" in s.proc.log(1_000_000)
    s.server.unlimit_messages(s.bot.user_id)


async def test_encrypted_room_round_trip(main: Setup) -> None:
    s = main
    room = await s.alice.create_room(invite=[s.bot.user_id], encrypted=True)
    await joined(Setup(s.server, s.bot, s.alice, room, s.proc, s.network))
    event_id, got = await answer(s.alice, s.bot.user_id, room, "!echo secret", s.proc)
    assert got.body == "secret"
    assert reply_to(got) == event_id
    wire = s.server.api(
        "GET", f"/rooms/{room}/event/{got.event['event_id']}", s.alice.client.access_token
    )
    assert wire["type"] == "m.room.encrypted"  # what the homeserver saw: ciphertext
    assert "secret" not in str(wire["content"])


async def test_homeserver_restart_resumes_and_pings_are_answered(
    bus: ChatSystem, synapse_factory: Callable[..., Synapse], tmp_path: Path
) -> None:
    server = synapse_factory()
    bot, alice_reg = server.register(), server.register()
    network = "n" + uuid.uuid4().hex[:8]
    events = await bus.events(network)
    async with matrix_users(server, tmp_path / "c1", alice_reg) as (alice,):
        room = await alice.create_room(invite=[bot.user_id])
        proc = await bus.connector(network, bot_settings(server, bot, rooms=[room]))
        await connected(events, proc)
        await joined(Setup(server, bot, alice, room, proc, network))
        await answer(alice, bot.user_id, room, "!echo one", proc)
    server.stop()
    await wait_event(events, ChatEventType.DISCONNECTED, proc)
    pong = await bus.io.request(
        bus.subjects.operator_ping(f"matrix.{network}"), Ping(), Pong, timeout=WAIT
    )
    assert pong.body.state == "running"
    await asyncio.sleep(1.5)  # a few reconnects fail meanwhile
    server.start()
    await connected(events, proc)
    async with matrix_users(server, tmp_path / "c2", alice_reg) as (alice,):
        _, got = await answer(alice, bot.user_id, room, "!echo two", proc)
        assert got.body == "two"
    await proc.stop()
