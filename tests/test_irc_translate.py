"""Pure translation between IRC and the bus: events to envelopes, outgoing messages to lines."""

from __future__ import annotations

import time

import pytest

from eeveepy.connector import Outbound
from eeveepy.errors import InvalidTargetError, IrcError
from eeveepy.protocol.models import ChatEventType, MessageStyle, OutgoingMessage
from operators.irc.events import CtcpQuery, IrcUser, Kicked, Message, NickChanged
from operators.irc.lines import format_line
from operators.irc.state import ServerState
from operators.irc.translate import (
    VERSION,
    chat_event,
    chat_message,
    connection_event,
    ctcp_reply,
    render,
)


def server(nick: str = "eevee", **isupport: str) -> ServerState:
    state = ServerState(nick)
    state.nick = nick
    state.registered = True
    state.isupport.update(isupport)
    return state


def out(target: str, text: str, style: MessageStyle = MessageStyle.MESSAGE) -> OutgoingMessage:
    return OutgoingMessage(platform="irc", network="test", target=target, text=text, style=style)


def test_chat_message() -> None:
    msg = Message(
        IrcUser("alice", "a@h", "acct"),
        "#ops",
        False,
        "\x02eevee\x02: hi",
        "\x02eevee\x02: hi",
        "message",
        "m1",
    )
    body = chat_message(msg, "libera", "eevee")
    assert (body.platform, body.network, body.room) == ("irc", "libera", "#ops")
    assert body.text == "eevee: hi"
    assert body.raw == "\x02eevee\x02: hi"
    assert body.mentioned
    assert not body.private
    assert body.message_id == "m1"
    assert (body.user.id, body.user.host, body.user.account) == ("alice", "a@h", "acct")
    action = Message(IrcUser("bob"), "bob", True, "waves", "\x01ACTION waves\x01", "action", None)
    body = chat_message(action, "libera", "eevee")
    assert body.style is MessageStyle.ACTION
    assert body.private
    assert not body.mentioned


def test_chat_events() -> None:
    kick = chat_event(Kicked("#ops", IrcUser("op", "o@h"), IrcUser("bob"), "spam"), "net")
    assert kick.event is ChatEventType.KICK
    assert (kick.room, kick.text) == ("#ops", "spam")
    assert kick.user is not None
    assert kick.user.id == "op"
    assert kick.target is not None
    assert kick.target.id == "bob"
    nick = chat_event(NickChanged(IrcUser("old", "u@h"), "new"), "net")
    assert (nick.event, nick.room, nick.text) == (ChatEventType.NICK, None, "new")
    up = connection_event(ChatEventType.CONNECTED, IrcUser("eevee"), "net", "irc.example")
    assert (up.event, up.text, up.network) == (ChatEventType.CONNECTED, "irc.example", "net")


def test_render_splits_to_fit_the_relayed_line() -> None:
    state = server(NICKLEN="30")
    state.user_host = "bot@host.example"
    lines = render(out("#ops", "word " * 200), state)
    assert len(lines) > 1
    assert all(line.kind == "PRIVMSG" and line.target == "#ops" for line in lines)
    # As the server relays it, with the longest nick the bot may have: within 512 bytes.
    for line in lines:
        relayed = (
            f":{'x' * 30}!bot@host.example {format_line(line.kind, line.target, line.text)}\r\n"
        )
        assert len(relayed.encode()) <= 512
    assert "".join(line.text for line in lines) == "word " * 200  # nothing lost
    assert render(out("alice", "", MessageStyle.NOTICE), state) == []


def test_render_styles_and_markdown() -> None:
    state = server()
    assert render(out("alice", "**hi**", MessageStyle.NOTICE), state) == [
        Outbound("alice", "\x02hi\x02", kind="NOTICE")
    ]
    assert render(out("#a", "waves \x01VERSION\x01", MessageStyle.ACTION), state) == [
        Outbound("#a", "\x01ACTION waves ␁VERSION␁\x01", kind="PRIVMSG")
    ]


@pytest.mark.parametrize(
    "target", ["0", "#a,#b", "two words", "#a\x07", "", "#" + "x" * 200, "a:b"]
)
def test_render_refuses_what_is_not_one_channel_or_nick(target: str) -> None:
    with pytest.raises(InvalidTargetError) as info:
        render(out(target, "hi"), server(CHANTYPES="#"))
    assert info.value.target == target
    assert str(info.value).startswith("invalid IRC target: ")
    assert isinstance(info.value, IrcError)


def test_ctcp_replies() -> None:
    assert ctcp_reply(CtcpQuery("alice", "VERSION", "")) == Outbound(
        "alice", f"\x01VERSION {VERSION}\x01", kind="NOTICE"
    )
    assert ctcp_reply(CtcpQuery("alice", "PING", "123 \x01x")) == Outbound(
        "alice", "\x01PING 123 x\x01", kind="NOTICE"
    )
    now = time.strptime("2024-01-02 03:04:05", "%Y-%m-%d %H:%M:%S")
    reply = ctcp_reply(CtcpQuery("alice", "TIME", ""), now)
    assert reply is not None
    assert reply.text == "\x01TIME Tue Jan 02 03:04:05 2024\x01"
    assert ctcp_reply(CtcpQuery("alice", "FINGER", "")) is None
