"""The XMPP connector when things go wrong: TLS it cannot trust, a server restart, a network
drop in the middle of a conversation (stream resumption), all against a real Prosody.

The bus side is a :class:`~tests.chat_system.ChatSystem` with router and echo (as in
tests/test_xmpp.py); each test starts its own connector, and the drop test talks to Prosody
through a TCP proxy that cuts the connection on demand (tests/tcp_proxy.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

pytest.register_assert_rewrite("tests.xmpp_server")

from eeveepy.bus.streams import ensure_chat_streams  # noqa: E402
from eeveepy.protocol.models import (  # noqa: E402
    ChatEvent,
    Control,
    ControlAction,
    ControlResult,
    OutgoingMessage,
    Ping,
    Pong,
)
from tests.chat_system import ChatSystem, running_system  # noqa: E402
from tests.irc_servers import make_cert  # noqa: E402
from tests.operator_procs import OperatorProc  # noqa: E402
from tests.tcp_proxy import TcpProxy  # noqa: E402
from tests.test_xmpp import WAIT, ask, bot_settings, in_room, room  # noqa: E402
from tests.xmpp_server import Prosody, XmppClient  # noqa: E402

pytest_plugins = ["tests.xmpp_server"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def system(
    nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ChatSystem]:
    async with running_system(nats_url, tmp_path_factory.mktemp("xmppr"), "xmpp") as s:
        yield s


async def next_event(
    events: asyncio.Queue[Any], kind: str, proc: OperatorProc, timeout: float = WAIT
) -> ChatEvent:
    """The next ``kind`` event (``connected``...) from ``events``, within ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        try:
            ev: ChatEvent = (await asyncio.wait_for(events.get(), max(left, 0.01))).body
        except TimeoutError:
            raise AssertionError(f"no {kind} event in {timeout} s\n{proc.log()}") from None
        if ev.event == kind:
            return ev


async def test_a_certificate_it_cannot_trust_is_refused_clearly(
    system: ChatSystem, prosody: Prosody, tmp_path: Any
) -> None:
    other_ca, _ = make_cert(tmp_path, "DNS:elsewhere")
    events = await system.events("badca")
    settings = bot_settings(prosody, "badca", ca_file=str(other_ca), reconnect_min=0.3)
    proc = await system.connector("badca", settings)
    try:
        ev = await next_event(events, "disconnected", proc)
        assert ev.text is not None
        assert "certificate" in ev.text
        assert "ca_file" in ev.text
        await asyncio.sleep(1.0)  # refused credentials: retried slowly, not in a loop
        attempts = sum('"disconnected: reconnecting"' in line for line in proc.lines())
        assert 1 <= attempts <= 2, proc.log()
        pong = await system.io.request(
            system.subjects.operator_ping("xmpp.badca"), Ping(), Pong, timeout=2.0
        )
        assert pong.body.state == "running"
        assert proc.proc.returncode is None
    finally:
        await proc.stop()
    assert "Traceback" not in proc.log(20000)


async def test_direct_tls(system: ChatSystem, prosody: Prosody) -> None:
    r = room("direct")
    alice = await XmppClient.connected(prosody, "dalice")
    settings = bot_settings(prosody, "eeveebot", tls="direct", port=prosody.tls_port, rooms=[r])
    proc = await system.connector("direct", settings)
    try:
        await alice.join(r)
        await in_room(alice, r, "eeveebot", proc)
        assert await ask(alice, "!echo tls", to=r, proc=proc) == "tls"
    finally:
        await alice.close()
        await proc.stop()


async def test_a_restarted_server_is_rejoined(
    system: ChatSystem, prosody_factory: Callable[[], Prosody]
) -> None:
    server = prosody_factory()
    server.start()
    r = room("restart")
    events = await system.events("restart")
    proc = await system.connector("restart", bot_settings(server, "eeveebot", rooms=[r]))
    alice = await XmppClient.connected(server, "ralice")
    try:
        await alice.join(r)
        await in_room(alice, r, "eeveebot", proc)
        await alice.close()
        server.stop()
        await next_event(events, "disconnected", proc)
        server.start()
        await next_event(events, "connected", proc)
        alice = await XmppClient.connected(server, "ralice2")
        await alice.join(r)
        await in_room(alice, r, "eeveebot", proc)
        assert await ask(alice, "!echo back", to=r, proc=proc) == "back"
    finally:
        await alice.close()
        await proc.stop()


async def test_a_network_drop_loses_nothing_either_way(
    system: ChatSystem, prosody: Prosody, proxy_factory: Callable[[int], Any]
) -> None:
    proxy: TcpProxy = await proxy_factory(prosody.port)
    r = room("drop")
    alice = await XmppClient.connected(prosody, "dropalice")
    settings = bot_settings(prosody, "eeveebot", rooms=[r], port=proxy.port, ping_interval=2.0)
    settings["reconnect_min"] = 0.5
    events = await system.events("drop")
    proc = await system.connector("drop", settings)
    try:
        await alice.join(r)
        await in_room(alice, r, "eeveebot", proc)
        assert await ask(alice, "!echo before", to=r, proc=proc) == "before"
        mark = alice.mark()
        assert proxy.cut() == 1
        await asyncio.sleep(0.1)  # the server notices: the bot's session hibernates
        alice.say(r, "!echo during the drop")
        out = OutgoingMessage(platform="xmpp", network="drop", target=r, text="sent in the drop")
        await system.io.publish(system.subjects.chat_out("xmpp", "drop"), out)
        await next_event(events, "connected", proc)
        for text in ("during the drop", "sent in the drop"):
            await alice.wait(lambda m, t=text: m.body == t and "eeveebot" in m.sender, since=mark)
        assert await ask(alice, "!echo after", to=r, proc=proc) == "after"
        await asyncio.sleep(1.0)  # any duplicate would be here by now
        bodies = [m.body for m in alice.received[mark:] if m.sender.endswith("/eeveebot")]
        assert bodies.count("during the drop") == 1, bodies
        assert bodies.count("sent in the drop") == 1, bodies
        assert proxy.accepted == 2  # one drop, one reconnect: the stream was resumed
        assert any('"resumed": true' in line for line in proc.lines()), proc.log()
    finally:
        await alice.close()
        await proc.stop()


async def test_a_silent_server_is_noticed_by_the_ping(
    system: ChatSystem, prosody: Prosody, proxy_factory: Callable[[int], Any]
) -> None:
    proxy: TcpProxy = await proxy_factory(prosody.port)
    r = room("silent")
    alice = await XmppClient.connected(prosody, "silentalice")
    settings = bot_settings(
        prosody, "eeveebot", rooms=[r], port=proxy.port, ping_interval=0.5, ping_timeout=1.0
    )
    events = await system.events("silent")
    proc = await system.connector("silent", settings)
    try:
        await alice.join(r)
        await in_room(alice, r, "eeveebot", proc)
        await next_event(events, "connected", proc)
        assert proxy.freeze() == 1  # the connection stays open; nothing goes through
        ev = await next_event(events, "disconnected", proc, timeout=5.0)
        assert ev.text is not None
        assert "ping" in ev.text
        await next_event(events, "connected", proc)
        assert await ask(alice, "!echo thawed", to=r, proc=proc) == "thawed"
    finally:
        await alice.close()
        await proc.stop()


async def test_a_reply_the_server_never_confirmed_is_sent_after_a_restart(
    system: ChatSystem, prosody: Prosody, proxy_factory: Callable[[int], Any]
) -> None:
    """The reply is written into a connection that no longer reaches the server, then the
    connector is killed: its stored copy was never acknowledged, so the restarted connector
    sends it."""
    await ensure_chat_streams(system.io.nc.jetstream(), system.prefix)
    proxy: TcpProxy = await proxy_factory(prosody.port)
    r = room("confirm")
    alice = await XmppClient.connected(prosody, "confirmalice")
    settings = bot_settings(prosody, "eeveebot", rooms=[r], port=proxy.port)
    proc = await system.connector("confirm", settings)
    try:
        await alice.join(r)
        await in_room(alice, r, "eeveebot", proc)
        assert await ask(alice, "!echo before", to=r, proc=proc) == "before"
        mark = alice.mark()
        proxy.freeze()
        out = OutgoingMessage(platform="xmpp", network="confirm", target=r, text="unconfirmed")
        await system.io.publish_stored(system.subjects.chat_out("xmpp", "confirm"), out)
        await asyncio.sleep(0.5)  # written, swallowed by the frozen connection, never acked
        proc.proc.kill()
        await proc.stop()
        proc = await system.connector("confirm", settings)
        got = await alice.wait(lambda m: m.body == "unconfirmed", since=mark, timeout=WAIT)
        assert got.sender.startswith(f"{r}/eeveebot")
        await asyncio.sleep(1.0)
        assert [m.body for m in alice.received[mark:]].count("unconfirmed") == 1
    finally:
        await alice.close()
        await proc.stop()


async def test_a_reply_unconfirmed_when_a_reload_replaces_the_stream_is_sent_again(
    system: ChatSystem,
    prosody: Prosody,
    proxy_factory: Callable[[int], Any],
    tmp_path: Path,
) -> None:
    """A reload that changes the server address makes a new stream: the reply written into
    the old one (frozen, never acknowledged) is sent by the new one, once."""
    await ensure_chat_streams(system.io.nc.jetstream(), system.prefix)
    proxy: TcpProxy = await proxy_factory(prosody.port)
    r = room("handover")
    alice = await XmppClient.connected(prosody, "handoveralice")
    settings = bot_settings(prosody, "handoverbot", rooms=[r], port=proxy.port)
    file = tmp_path / "settings.json"
    file.write_text(json.dumps(settings), encoding="utf-8")
    proc = await system.connector("handover", settings, EEVEE_SETTINGS_FILE=str(file))
    try:
        await alice.join(r)
        await in_room(alice, r, "handoverbot", proc)
        assert await ask(alice, "!echo before", to=r, proc=proc, bot="handoverbot") == "before"
        mark = alice.mark()
        proxy.freeze()
        out = OutgoingMessage(platform="xmpp", network="handover", target=r, text="unconfirmed")
        await system.io.publish_stored(system.subjects.chat_out("xmpp", "handover"), out)
        await asyncio.sleep(0.5)  # written, swallowed by the frozen connection, never acked
        file.write_text(json.dumps({**settings, "port": prosody.port}), encoding="utf-8")
        reply = await system.io.request(
            system.subjects.operator_ctl(proc.id),
            Control(action=ControlAction.RELOAD),
            ControlResult,
            timeout=WAIT,
        )
        assert reply.body.ok, reply.body
        got = await alice.wait(lambda m: m.body == "unconfirmed", since=mark, timeout=WAIT)
        assert got.sender.startswith(f"{r}/handoverbot"), proc.log()
        await asyncio.sleep(1.0)
        assert [m.body for m in alice.received[mark:]].count("unconfirmed") == 1
    finally:
        await alice.close()
        await proc.stop()


async def test_a_killed_connector_resumes_its_stream_and_misses_nothing(
    system: ChatSystem, prosody: Prosody
) -> None:
    """kill -9 leaves the session hibernating on the server; the process started in its place
    resumes it: what was said while no process ran is answered once, and the bot never left
    the room."""
    r = room("killed")
    alice = await XmppClient.connected(prosody, "killedalice")
    settings = bot_settings(prosody, "eeveebot", rooms=[r])
    proc = await system.connector("killed", settings)
    try:
        await alice.join(r)
        await in_room(alice, r, "eeveebot", proc)
        assert await ask(alice, "!echo before", to=r, proc=proc) == "before"
        roster = alice.plugin["xep_0045"]
        left: list[str] = []
        alice.add_event_handler(
            f"muc::{r}::got_offline", lambda p: left.append(str(p["muc"]["nick"]))
        )
        mark = alice.mark()
        proc.proc.kill()
        await proc.stop()
        alice.say(r, "!echo said while it was dead")
        await asyncio.sleep(0.3)
        proc = await system.connector("killed", settings)
        try:
            got = await alice.wait(
                lambda m: m.body == "said while it was dead", since=mark, timeout=WAIT
            )
        except AssertionError as e:
            log = f"the restarted connector's log:\n{proc.log()}\nprosody's:\n{prosody.output()}"
            raise AssertionError(f"{e}\n{log}") from None
        assert got.sender == f"{r}/eeveebot"
        assert await ask(alice, "!echo after", to=r, proc=proc) == "after"
        await asyncio.sleep(1.0)
        bodies = [m.body for m in alice.received[mark:]]
        assert bodies.count("said while it was dead") == 1, bodies
        assert "eeveebot" not in left  # resumed: never out of the room
        assert "eeveebot" in roster.get_roster(r)
        assert any('"resumed": true' in line for line in proc.lines()), proc.log()
    finally:
        await alice.close()
        await proc.stop()
