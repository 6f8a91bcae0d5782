"""Pure translation between XMPP and the bus (no sockets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree.ElementTree import fromstring

import pytest
from slixmpp.xmlstream.tostring import escape

from eeveepy.connector import Outbound
from eeveepy.errors import RefusedError
from eeveepy.protocol.models import ChatEventType, ChatUser, MessageStyle, OutgoingMessage
from operators.xmpp.muc import Change, ChangeKind, Muc
from operators.xmpp.stanzas import MessageIn, PresenceIn, read_message
from operators.xmpp.translate import change_event, direct_message, render, room_message

ROOM = "ops@conference.example.org"
ME = "bot@example.org"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
MUC_USER = "http://jabber.org/protocol/muc#user"


def live_room(nick: str = "eevee", live: bool = True) -> Muc:
    """A Muc in ROOM as ``nick``, with alice (real JID shown) and bob (hidden)."""
    muc = Muc()
    muc.joining(ROOM, nick)
    for who, real in (("alice", "alice@example.org/phone"), ("bob", None)):
        muc.presence(PresenceIn(f"{ROOM}/{who}", True, real_jid=real))
    muc.presence(PresenceIn(f"{ROOM}/{nick}", True, frozenset({"110"}), real_jid=f"{ME}/x"))
    if live:
        muc.subject(ROOM)
    return muc


def said(nick: str, body: str | None, **extra: Any) -> MessageIn:
    return MessageIn("groupchat", f"{ROOM}/{nick}", body, **extra)


# -- room messages -----------------------------------------------------------------------------


def test_room_message_from_an_occupant_with_a_real_jid() -> None:
    body = room_message(said("alice", "eevee: hi", id="s1"), live_room(), "example", ME)
    assert body is not None
    assert (body.platform, body.network, body.room) == ("xmpp", "example", ROOM)
    assert body.user == ChatUser(id="alice@example.org", name="alice", account="alice@example.org")
    assert (body.text, body.raw, body.style) == ("eevee: hi", "eevee: hi", MessageStyle.MESSAGE)
    assert body.mentioned
    assert not body.private
    assert body.message_id == "s1"


def test_room_message_from_an_occupant_without_a_real_jid() -> None:
    body = room_message(said("bob", "hello"), live_room(), "example", ME)
    assert body is not None
    # The occupant JID, never the nick alone (anyone can take a free nick).
    assert body.user == ChatUser(id=f"{ROOM}/bob", name="bob", account=None)
    assert not body.mentioned


def test_room_message_from_someone_not_in_the_roster() -> None:
    body = room_message(said("ghost", "boo"), live_room(), "example", ME)
    assert body is not None
    assert body.user.id == f"{ROOM}/ghost"


def test_action_and_mention() -> None:
    body = room_message(said("alice", "/me waves at Eevee"), live_room(), "example", ME)
    assert body is not None
    assert (body.text, body.raw, body.style) == (
        "waves at Eevee",
        "/me waves at Eevee",
        MessageStyle.ACTION,
    )
    assert body.mentioned
    plain = room_message(said("alice", "/meh eeveelution"), live_room(), "example", ME)
    assert plain is not None
    assert (plain.style, plain.text, plain.mentioned) == (
        MessageStyle.MESSAGE,
        "/meh eeveelution",
        False,
    )


def test_own_reflection_is_dropped() -> None:
    muc = live_room()
    assert room_message(said("eevee", "I said this"), muc, "example", ME) is None
    # After our nick changed, the new nick is ours and the old one someone else's.
    muc.presence(PresenceIn(f"{ROOM}/eevee", False, frozenset({"303", "110"}), new_nick="eevee2"))
    assert room_message(said("eevee2", "me again"), muc, "example", ME) is None
    assert room_message(said("eevee", "an impostor"), muc, "example", ME) is not None
    mentioned = room_message(said("alice", "eevee2: hi"), muc, "example", ME)
    assert mentioned is not None
    assert mentioned.mentioned


def test_history_before_the_subject_is_dropped() -> None:
    muc = live_room(live=False)
    assert room_message(said("alice", "!restart everything"), muc, "example", ME) is None
    muc.subject(ROOM)
    assert room_message(said("alice", "!status"), muc, "example", ME) is not None


def test_delay_from_the_room_is_dropped_delay_from_us_is_kept() -> None:
    muc = live_room()
    stamp = NOW - timedelta(hours=1)
    from_room = said("alice", "old", delayed=True, delay_from=ROOM, stamp=stamp)
    assert room_message(from_room, muc, "example", ME) is None
    upper_room = said("alice", "old", delayed=True, delay_from=ROOM.upper(), stamp=stamp)
    assert room_message(upper_room, muc, "example", ME) is None
    nobody = said("alice", "old", delayed=True, delay_from=None)
    assert room_message(nobody, muc, "example", ME) is None
    # A stream-management resend: the server delayed it for us; it is live.
    resent = said("alice", "still live", delayed=True, delay_from="Bot@Example.org", stamp=stamp)
    body = room_message(resent, muc, "example", ME)
    assert body is not None
    assert body.text == "still live"


def test_room_message_from_real_stanzas() -> None:
    muc = live_room()
    history = read_message(
        fromstring(
            f"<message xmlns='jabber:client' from='{ROOM}/alice' type='groupchat'><body>x</body>"
            f"<delay xmlns='urn:xmpp:delay' from='{ROOM}' stamp='2025-06-01T10:00:00Z'/></message>"
        )
    )
    assert room_message(history, muc, "example", ME) is None
    resent = read_message(
        fromstring(
            f"<message xmlns='jabber:client' from='{ROOM}/alice' type='groupchat'><body>y</body>"
            f"<delay xmlns='urn:xmpp:delay' from='{ME}' stamp='2025-06-01T10:00:00Z'/>"
            f"<stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='abc'/></message>"
        )
    )
    body = room_message(resent, muc, "example", ME)
    assert body is not None
    assert (body.text, body.message_id) == ("y", "abc")


@pytest.mark.parametrize(
    "msg",
    [
        said("alice", None),  # no body (a subject, a chat state)
        MessageIn("groupchat", ROOM, "from the room itself"),
        MessageIn("groupchat", "other@conference.example.org/alice", "not our room"),
        MessageIn("groupchat", "", "no sender"),
    ],
)
def test_room_messages_that_are_not_taken(msg: MessageIn) -> None:
    assert room_message(msg, live_room(), "example", ME) is None


def test_room_message_once_out_of_the_room() -> None:
    muc = live_room()
    muc.presence(PresenceIn(f"{ROOM}/eevee", False, frozenset({"110", "307"})))
    assert room_message(said("alice", "after the kick"), muc, "example", ME) is None
    muc.reset()
    assert room_message(said("alice", "after a new stream"), muc, "example", ME) is None


# -- one-to-one messages -----------------------------------------------------------------------


def test_direct_message() -> None:
    msg = MessageIn("chat", "alice@example.org/phone", "/me says hi", id="m1")
    body = direct_message(msg, Muc(), "example", NOW, 300)
    assert body is not None
    assert body.private
    assert body.room == "alice@example.org"  # answers go to the bare JID
    assert body.user == ChatUser(id="alice@example.org", name="alice", account="alice@example.org")
    assert (body.text, body.style, body.message_id) == ("says hi", MessageStyle.ACTION, "m1")
    assert not body.mentioned


def test_direct_message_from_a_domain() -> None:
    body = direct_message(
        MessageIn("normal", "example.org", "maintenance at 5"), Muc(), "e", NOW, 300
    )
    assert body is not None
    assert body.user == ChatUser(id="example.org", name="example.org", account="example.org")


@pytest.mark.parametrize(
    ("age", "max_delay", "taken"),
    [
        (timedelta(seconds=10), 300, True),
        (timedelta(seconds=300), 300, True),
        (timedelta(seconds=301), 300, False),
        (timedelta(days=3), 300, False),
        (timedelta(seconds=1), 0, False),
        (-timedelta(hours=1), 0, True),  # a stamp from the future (a clock ahead): taken
    ],
)
def test_direct_message_max_delay(age: timedelta, max_delay: float, taken: bool) -> None:
    msg = MessageIn("chat", "alice@example.org/phone", "!deploy", stamp=NOW - age, delayed=True)
    assert (direct_message(msg, Muc(), "example", NOW, max_delay) is not None) is taken
    # Only delayed messages are aged.
    fresh = MessageIn("chat", "alice@example.org/phone", "!deploy", stamp=NOW - age)
    assert direct_message(fresh, Muc(), "example", NOW, max_delay) is not None


def test_direct_message_with_a_stamp_without_zone() -> None:
    # A hostile stamp with no time zone is read as UTC: compared, never a crash.
    stanza = fromstring(
        "<message xmlns='jabber:client' from='mallory@evil.example/x' type='chat'><body>hi</body>"
        "<delay xmlns='urn:xmpp:delay' stamp='2025-06-01T11:00:00'/></message>"
    )
    msg = read_message(stanza)
    assert direct_message(msg, Muc(), "example", NOW, 300) is None  # an hour old
    assert direct_message(msg, Muc(), "example", NOW, 7200) is not None
    undated = MessageIn("chat", "a@b/c", "x", delayed=True)
    assert direct_message(undated, Muc(), "example", NOW, 0) is not None  # age unknown: taken


def test_muc_private_message_answers_through_the_room() -> None:
    muc = live_room()
    stanza = fromstring(
        f"<message xmlns='jabber:client' from='{ROOM}/alice' type='chat'><body>psst</body>"
        f"<x xmlns='{MUC_USER}'/></message>"
    )
    body = direct_message(read_message(stanza), muc, "example", NOW, 300)
    assert body is not None
    assert body.private
    assert body.room == f"{ROOM}/alice"  # the reply goes back through the room
    assert body.user == ChatUser(id="alice@example.org", name="alice", account="alice@example.org")
    hidden = direct_message(
        MessageIn("chat", f"{ROOM}/bob", "x", muc_private=True), muc, "e", NOW, 9
    )
    assert hidden is not None
    assert hidden.user == ChatUser(id=f"{ROOM}/bob", name="bob")
    assert hidden.room == f"{ROOM}/bob"


def test_muc_private_message_without_the_muc_user_mark() -> None:
    # The room's JID is nobody's identity, even when the room does not mark the message.
    body = direct_message(MessageIn("chat", f"{ROOM}/bob", "psst"), live_room(), "e", NOW, 300)
    assert body is not None
    assert (body.user.id, body.room) == (f"{ROOM}/bob", f"{ROOM}/bob")
    # And the reply renders as a one-to-one message to the occupant.
    reply = OutgoingMessage(platform="xmpp", network="e", target=body.room, text="ok", private=True)
    assert render(reply, max_bytes=100, styling=True) == [
        Outbound(target=f"{ROOM}/bob", text="ok", kind="chat", private=True)
    ]


def test_direct_messages_not_taken() -> None:
    notice = MessageIn("normal", ROOM, "alice asks for voice")  # from the room itself
    assert direct_message(notice, live_room(), "e", NOW, 300) is None
    assert direct_message(MessageIn("chat", "a@b/c", None), Muc(), "e", NOW, 300) is None
    assert direct_message(MessageIn("chat", "", "who?"), Muc(), "e", NOW, 300) is None


# -- events ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "event"),
    [
        (ChangeKind.JOIN, ChatEventType.JOIN),
        (ChangeKind.JOINED, ChatEventType.JOIN),
        (ChangeKind.PART, ChatEventType.PART),
        (ChangeKind.LEFT, ChatEventType.PART),
    ],
)
def test_change_event_joins_and_parts(kind: ChangeKind, event: ChatEventType) -> None:
    body = change_event(Change(kind, ROOM, "alice", "alice@example.org", "bye"), "example")
    assert body is not None
    assert (body.platform, body.network, body.event, body.room, body.text) == (
        "xmpp",
        "example",
        event,
        ROOM,
        "bye",
    )
    assert body.user == ChatUser(id="alice@example.org", name="alice", account="alice@example.org")
    assert body.target is None


@pytest.mark.parametrize("kind", [ChangeKind.KICK, ChangeKind.KICKED])
def test_change_event_kicks_name_the_target(kind: ChangeKind) -> None:
    body = change_event(Change(kind, ROOM, "troll", None, "flooding"), "example")
    assert body is not None
    assert body.event is ChatEventType.KICK
    assert body.user is None
    assert body.target == ChatUser(id=f"{ROOM}/troll", name="troll")
    assert body.text == "flooding"


def test_change_event_nick_and_refused() -> None:
    body = change_event(Change(ChangeKind.NICK, ROOM, "alice", None, "alicia"), "example")
    assert body is not None
    assert (body.event, body.text) == (ChatEventType.NICK, "alicia")
    assert body.user == ChatUser(id=f"{ROOM}/alice", name="alice")
    assert change_event(Change(ChangeKind.REFUSED, ROOM, "eevee", text="conflict"), "x") is None


# -- rendering ---------------------------------------------------------------------------------


def out(
    target: str, text: str, *, private: bool = False, style: MessageStyle = MessageStyle.MESSAGE
) -> OutgoingMessage:
    return OutgoingMessage(
        platform="xmpp", network="example", target=target, text=text, private=private, style=style
    )


def test_render_to_a_room_and_to_a_person() -> None:
    assert render(out(ROOM, "**hi** *there*"), max_bytes=1000, styling=True) == [
        Outbound(target=ROOM, text="*hi* _there_", kind="groupchat", private=False)
    ]
    assert render(
        out("alice@example.org", "**hi**", private=True), max_bytes=1000, styling=False
    ) == [Outbound(target="alice@example.org", text="hi", kind="chat", private=True)]
    full = render(out("alice@example.org/phone", "x", private=True), max_bytes=1000, styling=True)
    assert full[0].target == "alice@example.org/phone"


@pytest.mark.parametrize(
    ("target", "private"),
    [
        ("", False),
        ("#ops", False),
        ("conference.example.org", False),  # a service, not a room
        (f"{ROOM}/nick", False),  # an occupant, not a room
        ("not a jid", False),
        (" ops@conference.example.org", False),
        ("", True),
        ("a@b/", True),
        ("a b@example.org", True),
        ("a@example.org/\x00", True),
    ],
)
def test_render_refuses_targets_that_are_not_jids(target: str, private: bool) -> None:
    with pytest.raises(RefusedError, match="is not a"):
        render(out(target, "hi", private=private), max_bytes=1000, styling=True)


def test_render_actions() -> None:
    items = render(
        out(ROOM, "waves **hard**", style=MessageStyle.ACTION), max_bytes=1000, styling=True
    )
    assert [i.text for i in items] == ["/me waves *hard*"]
    # Every piece of a long action is an action, and fits with its prefix.
    long = render(out(ROOM, "wave " * 40, style=MessageStyle.ACTION), max_bytes=64, styling=True)
    assert len(long) > 1
    assert all(i.text.startswith("/me wave") and len(i.text.encode()) <= 64 for i in long)


def test_render_hostile_text() -> None:
    text = "a\x00b\x1bc\ud800d\ufffe\r\ne\rf"
    (item,) = render(out(ROOM, text), max_bytes=1000, styling=True)
    assert item.text == "a␀b␛c\ufffdd\ufffd\ne\nf"
    item.text.encode("utf-8")  # sendable: no surrogate left
    assert render(out(ROOM, ""), max_bytes=1000, styling=True) == []
    assert render(out(ROOM, " \n\r\n\t "), max_bytes=1000, styling=True) == []


def test_render_splits_at_max_bytes() -> None:
    text = "\n".join(f"line {n} ünï 😀 " + "word " * 10 for n in range(300))
    items = render(out(ROOM, text), max_bytes=500, styling=True)
    assert len(items) > 1
    assert all(len(i.text.encode("utf-8")) <= 500 for i in items)
    assert all((i.target, i.kind, i.private) == (ROOM, "groupchat", False) for i in items)
    assert "\n".join(i.text for i in items) == text  # cut at line breaks only here
    huge = render(out(ROOM, "x" * 100_000), max_bytes=60_000, styling=False)
    assert [len(i.text) for i in huge] == [60_000, 40_000]


def test_render_keeps_each_stanza_under_the_budget_as_sent() -> None:
    # Quotes are sent as &quot; (6 bytes): 50 000 of them are 300 kB on the wire, over
    # Prosody's 256 KiB stanza limit (the server would close the stream).
    items = render(out(ROOM, '"' * 50_000 + " & <done>"), max_bytes=60_000, styling=False)
    assert len(items) == 6
    for item in items:
        assert len(escape(item.text).encode("utf-8")) <= 60_000  # as the stream writes it
    assert "".join(i.text for i in items) == '"' * 50_000 + " & <done>"
