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

from tests.chat_system import ChatSystem  # noqa: E402
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
    s = ChatSystem(nats_url, tmp_path_factory.mktemp("xmpp"), platform="xmpp")
    await s.start()
    try:
        await s.commands()
        yield s
    finally:
        await s.close()


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
    client: XmppClient, text: str, *, to: str, proc: OperatorProc, private: bool = False
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
            lambda r: r.kind == want and "eeveebot" in r.sender and not r.delayed,
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
