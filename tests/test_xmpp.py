"""The XMPP connector end to end: a real Prosody, real operator processes, slixmpp clients.

Router and echo run once for the module (as processes, under a prefix of their own); the
bot ``xmpp.test`` (STARTTLS verified with the server's CA) is in a room with the test's
clients. Other tests start connectors of their own: a wrong CA, a restarted server, a network
drop through a proxy. Prosody is started once per session (tests/xmpp_server.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

pytest.register_assert_rewrite("tests.xmpp_server")

from eeveepy.protocol.models import (  # noqa: E402
    ConnectorControl,
    ConnectorControlResult,
    DeadLetter,
    OutgoingMessage,
)
from tests.chat_system import ChatSystem, running_system  # noqa: E402
from tests.operator_procs import OperatorProc  # noqa: E402
from tests.xmpp_server import MUC, Prosody, XmppClient  # noqa: E402

pytest_plugins = ["tests.xmpp_server"]

WAIT = 10.0


def bot_settings(server: Prosody, user: str, **extra: Any) -> dict[str, Any]:
    """Settings of a bot account ``user`` (registered here), STARTTLS verified."""
    server.register(user, "botpass")
    return {
        "jid": f"{user}@localhost",
        "password": "botpass",
        "host": "127.0.0.1",
        "port": server.port,
        "ca_file": str(server.cert),
        "nick": user,
        "reconnect_min": 0.2,
        "reconnect_max": 1.0,
        "egress_messages": 0,
        **extra,
    }


def room(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}@{MUC}"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def system(
    nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ChatSystem]:
    async with running_system(nats_url, tmp_path_factory.mktemp("xmpp"), "xmpp") as s:
        yield s


class Main:
    """The module's bot in a room with alice and bob."""

    def __init__(self, alice: XmppClient, bob: XmppClient, proc: OperatorProc, room: str) -> None:
        self.alice, self.bob, self.proc, self.room = alice, bob, proc, room


async def in_room(client: XmppClient, room_jid: str, nick: str, proc: OperatorProc) -> None:
    """Until ``client`` sees ``nick`` in ``room_jid``."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while nick not in client.plugin["xep_0045"].get_roster(room_jid):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{nick} never joined {room_jid}\n{proc.log()}")
        await asyncio.sleep(0.05)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def main(system: ChatSystem, prosody: Prosody) -> AsyncIterator[Main]:
    alice = await XmppClient.connected(prosody, "alice")
    bob = await XmppClient.connected(prosody, "bob")
    r = room("main")
    await alice.join(r)
    await bob.join(r)
    alice.say(r, "an old line, history for whoever joins later")
    alice.say(r, "!echo from history")
    await asyncio.sleep(0.2)
    proc = await system.connector("test", bot_settings(prosody, "eeveebot", rooms=[r]))
    try:
        await in_room(alice, r, "eeveebot", proc)
        yield Main(alice, bob, proc, r)
    finally:
        await asyncio.gather(alice.close(), bob.close())
        await proc.stop()


async def ask(
    client: XmppClient,
    text: str,
    *,
    to: str,
    proc: OperatorProc,
    private: bool = False,
    bot: str = "eeveebot",
) -> str:
    """Send ``text`` (to a room, or privately to a JID) and return the bot's answer."""
    mark = client.mark()
    if private:
        client.tell(to, text)
    else:
        client.say(to, text)
    want = "chat" if private else "groupchat"
    try:
        got = await client.wait(
            lambda r: (
                r.kind == want
                and (r.sender.endswith("/" + bot) or r.sender.startswith(bot + "@"))
                and not r.delayed
            ),
            since=mark,
        )
    except AssertionError as e:
        raise AssertionError(f"no answer to {text!r}: {e}\n{proc.log()}") from None
    return got.body


async def test_echo_in_a_room(main: Main) -> None:
    assert await ask(main.bob, "!echo hi", to=main.room, proc=main.proc) == "hi"


async def test_history_on_join_is_not_answered(main: Main) -> None:
    await ask(main.bob, "!echo now", to=main.room, proc=main.proc)
    answers = [r.body for r in main.alice.received if "eeveebot" in r.sender]
    assert "from history" not in answers, answers


async def test_a_private_command_is_answered_privately(main: Main) -> None:
    mark = main.bob.mark()
    answer = await ask(
        main.alice, "!echo secret", to="eeveebot@localhost", proc=main.proc, private=True
    )
    assert answer == "secret"
    await asyncio.sleep(0.3)
    assert all("secret" not in r.body for r in main.bob.received[mark:])


async def test_help_lists_echo(main: Main) -> None:
    answer = await ask(main.bob, "!help", to=main.room, proc=main.proc)
    assert "echo" in answer


async def control(system: ChatSystem, **request: Any) -> ConnectorControlResult:
    reply = await system.io.request(
        system.subjects.chat_ctl("xmpp", "test"),
        ConnectorControl(**request),
        ConnectorControlResult,
        timeout=WAIT + 5,
    )
    return reply.body


async def test_control_join_names_nick_part(system: ChatSystem, main: Main) -> None:
    r = room("ctl")
    await main.alice.join(r)
    joined = await control(system, action="join", room=r)
    assert joined.ok, joined.message
    names = await control(system, action="names", room=r)
    assert names.ok, names.message
    assert {"alice", "eeveebot"} <= set(names.users), names
    assert await ask(main.alice, "!echo in ctl", to=r, proc=main.proc) == "in ctl"
    renamed = await control(system, action="nick", nick="eeveebot-x")
    assert renamed.ok, renamed.message
    answer = await ask(main.alice, "!echo renamed", to=r, proc=main.proc, bot="eeveebot-x")
    assert answer == "renamed"
    assert "eeveebot-x" in main.alice.plugin["xep_0045"].get_roster(r)
    back = await control(system, action="nick", nick="eeveebot")
    assert back.ok, back.message
    left = await control(system, action="part", room=r, reason="bye\r\n<evil/>")
    assert left.ok, left.message
    assert (await control(system, action="names", room=r)).ok is False
    bad = await control(system, action="join", room="not a jid")
    assert not bad.ok
    assert "join" in bad.message


async def test_a_taken_nick_is_replaced_by_the_next(
    system: ChatSystem, main: Main, prosody: Prosody
) -> None:
    r = room("taken")
    squatter = await XmppClient.connected(prosody, "squatter")
    try:
        await squatter.join(r, nick="eeveebot")
        joined = await control(system, action="join", room=r)
        assert joined.ok, joined.message
        await in_room(squatter, r, "eeveebot_", main.proc)
        answer = await ask(squatter, "!echo still here", to=r, proc=main.proc, bot="eeveebot_")
        assert answer == "still here"
    finally:
        await squatter.close()


async def test_hostile_text_both_ways(system: ChatSystem, main: Main) -> None:
    out = system.subjects.chat_out("xmpp", "test")
    hostile = "ctl\x00\x01\x1b[31m</body><evil/>\ufffe end"
    msg = OutgoingMessage(platform="xmpp", network="test", target=main.room, text=hostile)
    mark = main.bob.mark()
    await system.io.publish(out, msg)
    got = await main.bob.wait(lambda r: r.body.startswith("ctl") and "end" in r.body, since=mark)
    assert "<evil/>" in got.body  # text, never markup
    assert "\x00" not in got.body
    big = "x" * 100_000
    mark = main.bob.mark()
    await system.io.publish(out, msg.model_copy(update={"text": big}))
    pieces = []
    while sum(len(p) for p in pieces) < len(big):
        got = await main.bob.wait(lambda r: r.body.startswith("x"), since=mark)
        mark = main.bob.received.index(got) + 1
        pieces.append(got.body)
    assert "".join(pieces) == big
    assert len(pieces) == 2
    mark = main.bob.mark()
    main.alice.say(main.room, "!echo " + "é" * 30_000 + "\u202e\u2028")
    got = await main.bob.wait(
        lambda r: r.body.startswith("é") and "/eeveebot" in r.sender, since=mark
    )
    assert got.body.startswith("é" * 30_000)
    main.alice.tell("eeveebot@localhost", "\x7f" * 10)
    assert await ask(main.bob, "!echo alive", to=main.room, proc=main.proc) == "alive"


async def test_an_invalid_target_is_dead_lettered(system: ChatSystem, main: Main) -> None:
    out = system.subjects.chat_out("xmpp", "test")
    dead = await system.collect(system.subjects.dlq(out), DeadLetter)
    bad = OutgoingMessage(platform="xmpp", network="test", target="no room here", text="x")
    await system.io.publish(out, bad)
    letter = (await asyncio.wait_for(dead.get(), WAIT)).body
    assert "not a room JID" in letter.reason


async def test_invitations_are_joined_only_from_allowed_inviters(
    system: ChatSystem, prosody: Prosody
) -> None:
    host = await XmppClient.connected(prosody, "host")
    stranger = await XmppClient.connected(prosody, "stranger")
    settings = bot_settings(prosody, "invitee", invite_from=["host@localhost"])
    events = await system.events("invitee")
    proc = await system.connector("invitee", settings)
    try:
        allowed, refused = room("invited"), room("stranger")
        await host.join(allowed)
        await stranger.join(refused)
        first = (await asyncio.wait_for(events.get(), WAIT)).body
        assert first.event == "connected", first
        stranger.plugin["xep_0045"].invite(refused, "invitee@localhost", reason="come")
        host.plugin["xep_0045"].invite(allowed, "invitee@localhost", reason="please")
        invites = set()
        while len(invites) < 2:  # the join of the allowed room may come between the two
            ev = (await asyncio.wait_for(events.get(), WAIT)).body
            if ev.event == "invite":
                invites.add(ev.room)
        assert invites == {allowed, refused}
        await in_room(host, allowed, "invitee", proc)
        await asyncio.sleep(0.5)
        assert "invitee" not in stranger.plugin["xep_0045"].get_roster(refused)
    finally:
        await asyncio.gather(host.close(), stranger.close())
        await proc.stop()


async def test_topic_join_part_and_kick_are_events(system: ChatSystem, main: Main) -> None:
    r = room("events")
    await main.alice.join(r)  # the first in the room: its owner
    joined = await control(system, action="join", room=r)
    assert joined.ok, joined.message
    await ask(main.alice, "!echo live", to=r, proc=main.proc)  # past the subject of joining
    events = await system.events("test")

    async def expect(kind: str, name: str, text: str | None) -> None:
        seen = []
        while True:
            try:
                ev = (await asyncio.wait_for(events.get(), WAIT)).body
            except TimeoutError:
                raise AssertionError(f"no {kind} of {name}: {seen}\n{main.proc.log()}") from None
            who = ev.target if ev.event == "kick" else ev.user
            seen.append((ev.event, who.name if who else None, ev.text))
            if ev.room == r and seen[-1] == (kind, name, text):
                return

    main.alice.plugin["xep_0045"].set_subject(r, "the new topic")
    await expect("topic", "alice", "the new topic")
    await main.bob.join(r)
    await expect("join", "bob", None)
    main.bob.plugin["xep_0045"].leave_muc(r, "bob")
    await expect("part", "bob", None)
    await main.alice.plugin["xep_0045"].set_role(r, "eeveebot", "none", reason="out")
    await expect("kick", "eeveebot", "out")
    assert (await control(system, action="names", room=r)).ok is False  # kicked: out


async def test_odd_stanzas_do_not_stop_it(main: Main) -> None:
    bot = "eeveebot@localhost"
    for raw in (
        f"<message to='{bot}' type='chat'><body/></message>",
        f"<message to='{bot}' type='groupchat'><body>!echo not from a room</body></message>",
        f"<message to='{bot}' type='chat'><subject>no body</subject></message>",
        f"<message to='{bot}'><x xmlns='http://jabber.org/protocol/muc#user'><invite/></x></message>",
        f"<message to='{bot}'><x xmlns='jabber:x:conference' jid='not a jid'/></message>",
        f"<message to='{bot}' type='headline'><body>!echo headline</body></message>",
        f"<presence to='{bot}' type='unavailable'><x xmlns='http://jabber.org/protocol/muc#user'>"
        "<item jid=''/><status/></x></presence>",
        f"<message to='{bot}' type='chat'><body>{'x' * 100_000}</body>"
        "<delay xmlns='urn:xmpp:delay' stamp='not a time'/></message>",
    ):
        main.alice.send_raw(raw)
    # the last one is a command (private: no prefix needed) with a stamp that is no time;
    # its answer is over 100 kB: two messages
    unknown = await main.alice.wait(lambda r: r.body.startswith("unknown command `xxx"))
    assert unknown.kind == "chat"
    await main.alice.wait(lambda r: r.body.endswith("`; try `help`"))
    assert await ask(main.alice, "!echo still fine", to=bot, proc=main.proc, private=True) == (
        "still fine"
    )
    assert "stanza not handled" not in main.proc.log(100_000)


async def test_a_refused_nick_change_says_why(system: ChatSystem, main: Main) -> None:
    taken = await control(system, action="nick", nick="alice")  # alice is in the main room
    assert not taken.ok
    assert "conflict" in taken.message
    assert await ask(main.bob, "!echo same nick", to=main.room, proc=main.proc) == "same nick"
