"""The Matrix connector end to end: a real Synapse, real operator processes, a real client.

Router and echo run once for the module (tests/chat_system.ChatSystem); each test starts
``python -m operators.matrix`` as ``matrix.<network>`` for a bot account of its own on the
session's Synapse (tests/matrix_server.py), and talks to it from matrix-nio clients.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

pytest.register_assert_rewrite("tests.matrix_server")

from eeveepy.protocol.models import (  # noqa: E402
    ChatEvent,
    ChatEventType,
    ChatMessage,
    ConnectorControl,
    ConnectorControlResult,
    MessageStyle,
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
        proc = await bus.connector(network, settings) if start else None
        s = Setup(synapse, bot, alice, room, proc, network)  # type: ignore[arg-type]
        if proc is not None:
            await joined(s)
        return s

    try:
        yield make
    finally:
        for users in reversed(stack):
            await users.__aexit__(None, None, None)


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


# -- the basics --------------------------------------------------------------------------------


async def test_echo_is_a_reply_with_html(bus: ChatSystem, setup: Callable[..., Any]) -> None:
    s: Setup = await setup()
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
    await s.proc.stop()


async def test_help_and_styles(bus: ChatSystem, setup: Callable[..., Any]) -> None:
    s: Setup = await setup()
    _, got = await answer(s.alice, s.bot.user_id, s.room, "!help", s.proc)
    assert "echo" in (got.body or "")
    inbound = await bus.collect(f"chat.in.matrix.{s.network}.>", ChatMessage)
    await s.alice.send(s.room, "waves", msgtype="m.emote")
    await s.alice.send(s.room, "a notice", msgtype="m.notice")
    first = (await asyncio.wait_for(inbound.get(), WAIT)).body
    second = (await asyncio.wait_for(inbound.get(), WAIT)).body
    assert (first.style, first.text) == (MessageStyle.ACTION, "waves")
    assert (second.style, second.text) == (MessageStyle.NOTICE, "a notice")
    await s.proc.stop()


async def test_command_in_thread_is_answered_in_the_thread(setup: Callable[..., Any]) -> None:
    s: Setup = await setup()
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
    await s.proc.stop()
