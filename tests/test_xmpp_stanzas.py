"""Reading XMPP stanzas and following rooms from their presences (no sockets).

Stanzas are real XML in the ``jabber:client`` namespace, as the stream hands them over.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from xml.etree.ElementTree import Element, fromstring

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.xmpp.muc import Muc
from operators.xmpp.stanzas import Invite, PresenceIn, read_message, read_presence

ROOM = "ops@conference.example.org"
ME = "bot@example.org"
MUC_USER = "http://jabber.org/protocol/muc#user"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def xml(text: str) -> Element:
    """A stanza as the stream gives it: default namespace jabber:client."""
    return fromstring(
        text.replace("<message", "<message xmlns='jabber:client'", 1).replace(
            "<presence", "<presence xmlns='jabber:client'", 1
        )
    )


def presence(
    nick: str,
    *codes: str,
    kind: str | None = None,
    jid: str | None = None,
    new_nick: str | None = None,
    reason: str | None = None,
    room: str = ROOM,
) -> PresenceIn:
    """A room's presence for ``nick``, read from its XML."""
    attrs = f" type='{kind}'" if kind else ""
    item = "<item affiliation='none' role='participant'"
    item += f" jid='{jid}'" if jid else ""
    item += f" nick='{new_nick}'" if new_nick else ""
    item += f"><reason>{reason}</reason></item>" if reason else "/>"
    status = "".join(f"<status code='{c}'/>" for c in codes)
    return read_presence(
        xml(
            f"<presence from='{room}/{nick}'{attrs}>"
            f"<x xmlns='{MUC_USER}'>{item}{status}</x></presence>"
        )
    )


# -- messages ----------------------------------------------------------------------------------


def test_groupchat_message() -> None:
    msg = read_message(
        xml(
            f"<message from='{ROOM}/alice' to='{ME}/eevee' type='groupchat' id='c1'>"
            "<body>hello &amp; welcome</body>"
            f"<stanza-id xmlns='urn:xmpp:sid:0' id='sid-1' by='{ROOM}'/>"
            "</message>"
        )
    )
    assert (msg.kind, msg.sender, msg.body) == ("groupchat", f"{ROOM}/alice", "hello & welcome")
    assert msg.id == "sid-1"  # the room's stanza id, not the sender's
    assert (msg.subject, msg.delayed, msg.delay_from, msg.stamp) == (None, False, None, None)
    assert not msg.muc_private
    assert msg.invite is None
    assert msg.error is None


def test_message_id_falls_back_to_the_stanza_id_attribute() -> None:
    assert read_message(xml("<message from='a@b/c' id='m7'><body>x</body></message>")).id == "m7"
    no_sid = "<message from='a@b/c' id='m7'><stanza-id xmlns='urn:xmpp:sid:0'/></message>"
    assert read_message(xml(no_sid)).id == "m7"
    assert read_message(xml("<message from='a@b/c'/>")).id is None


def test_replies_and_threads() -> None:
    msg = read_message(
        xml(
            "<message from='a@b/c' type='chat'><body>yes</body><thread>t-1</thread>"
            "<reply xmlns='urn:xmpp:reply:0' to='bot@b' id='m7'/></message>"
        )
    )
    assert (msg.reply_to, msg.thread) == ("m7", "t-1")
    bare = read_message(xml("<message from='a@b/c'><reply xmlns='urn:xmpp:reply:0'/></message>"))
    assert (bare.reply_to, bare.thread) == (None, None)


def test_history_delayed_by_the_room() -> None:
    msg = read_message(
        xml(
            f"<message from='{ROOM}/alice' type='groupchat'><body>old</body>"
            f"<delay xmlns='urn:xmpp:delay' from='{ROOM}' stamp='2024-05-01T10:20:30Z'/></message>"
        )
    )
    assert msg.delayed
    assert msg.delay_from == ROOM
    assert msg.stamp == datetime(2024, 5, 1, 10, 20, 30, tzinfo=UTC)


def test_resent_by_the_server_after_a_stream_drop() -> None:
    # A stream-management resend carries a delay from the bot's own bare JID.
    msg = read_message(
        xml(
            f"<message from='{ROOM}/alice' type='groupchat'><body>live</body>"
            f"<delay xmlns='urn:xmpp:delay' from='{ME}' stamp='2024-05-01T10:20:30.123+02:00'/>"
            "</message>"
        )
    )
    assert (msg.delayed, msg.delay_from) == (True, ME)
    assert msg.stamp == datetime(2024, 5, 1, 8, 20, 30, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2024-01-01T00:00:00", datetime(2024, 1, 1, tzinfo=UTC)),  # no zone: read as UTC
        ("2024-01-01T00:00:00-05:00", datetime(2024, 1, 1, 5, tzinfo=UTC)),
        ("garbage", None),
        ("", None),
        ("2024-13-45T99:00:00Z", None),
    ],
)
def test_delay_stamps_are_aware_or_none(stamp: str, expected: datetime | None) -> None:
    msg = read_message(xml(f"<message><delay xmlns='urn:xmpp:delay' stamp='{stamp}'/></message>"))
    assert msg.delayed
    assert msg.stamp == expected
    if msg.stamp is not None:
        assert msg.stamp.tzinfo is not None
        assert datetime.now(UTC) - msg.stamp > timedelta(0)  # comparable with the clock


def test_subject_only_message() -> None:
    msg = read_message(
        xml(f"<message from='{ROOM}/alice' type='groupchat'><subject>Ops</subject></message>")
    )
    assert (msg.subject, msg.body) == ("Ops", None)
    empty = read_message(xml(f"<message from='{ROOM}' type='groupchat'><subject/></message>"))
    assert (empty.subject, empty.body) == ("", None)  # no subject set: still the subject


def test_mediated_invite() -> None:
    msg = read_message(
        xml(
            f"<message from='{ROOM}' to='{ME}'><x xmlns='{MUC_USER}'>"
            "<invite from='alice@example.org/phone'><reason>come in</reason></invite>"
            "<password>s3cret</password></x></message>"
        )
    )
    assert msg.invite == Invite(ROOM, "alice@example.org/phone", "come in", "s3cret", via_room=True)
    assert not msg.muc_private


def test_direct_invite() -> None:
    msg = read_message(
        xml(
            "<message from='alice@example.org/phone' to='bot@example.org'>"
            f"<x xmlns='jabber:x:conference' jid='{ROOM}' reason='hi' password='pw'/></message>"
        )
    )
    assert msg.invite == Invite(ROOM, "alice@example.org/phone", "hi", "pw")
    bare = read_message(
        xml(f"<message from='a@b/c'><x xmlns='jabber:x:conference' jid='{ROOM}'/></message>")
    )
    assert bare.invite == Invite(ROOM, "a@b/c")


@pytest.mark.parametrize(
    "stanza",
    [
        "<message from='a@b/c'><x xmlns='jabber:x:conference'/></message>",
        "<message from='a@b/c'><x xmlns='jabber:x:conference' jid=''/></message>",
        "<message from='a@b/c'><x xmlns='jabber:x:conference' jid='not a room'/></message>",
        f"<message from='a@b/c'><x xmlns='jabber:x:conference' jid='{ROOM}/nick'/></message>",
        "<message from='a@b/c'><x xmlns='jabber:x:conference' jid='conference.x.org'/></message>",
        f"<message><x xmlns='{MUC_USER}'><invite/></x></message>",
    ],
)
def test_invites_to_no_room_are_not_invites(stanza: str) -> None:
    assert read_message(xml(stanza)).invite is None


def test_muc_private_message() -> None:
    msg = read_message(
        xml(
            f"<message from='{ROOM}/alice' type='chat'><body>psst</body>"
            f"<x xmlns='{MUC_USER}'/></message>"
        )
    )
    assert msg.muc_private
    assert (msg.kind, msg.sender, msg.body) == ("chat", f"{ROOM}/alice", "psst")
    plain = read_message(
        xml("<message from='alice@example.org/phone' type='chat'><body>hi</body></message>")
    )
    assert not plain.muc_private


def test_error_messages() -> None:
    msg = read_message(
        xml(
            f"<message from='{ROOM}' type='error'><body>mine</body><error type='cancel'>"
            f"<not-acceptable xmlns='{STANZAS}'/><text xmlns='{STANZAS}'>not in the room</text>"
            "</error></message>"
        )
    )
    assert msg.kind == "error"
    assert msg.error == "not-acceptable: not in the room"
    text_first = (
        f"<message type='error'><error><text xmlns='{STANZAS}'>why</text>"
        f"<forbidden xmlns='{STANZAS}'/></error></message>"
    )
    assert read_message(xml(text_first)).error == "forbidden: why"
    assert read_message(xml("<message type='error'/>")).error is None
    assert (
        read_message(xml("<message type='error'><error/></message>")).error == "undefined-condition"
    )
    assert (
        read_message(xml("<message type='chat'><error/></message>")).error is None
    )  # not an error


def test_message_missing_everything() -> None:
    msg = read_message(xml("<message/>"))
    assert (msg.kind, msg.sender, msg.body, msg.id, msg.invite) == ("normal", "", None, None, None)
    assert read_message(xml("<message><body/></message>")).body == ""
    # Children in another namespace are not the client's body or subject.
    assert read_message(fromstring("<message><body>x</body></message>")).body is None


# Any attribute values, any children of the known kinds, in any order and number.
_attr = st.one_of(
    st.none(), st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
)
_child = st.sampled_from(
    [
        "<body>b</body>",
        "<body/>",
        "<subject/>",
        "<delay xmlns='urn:xmpp:delay'/>",
        "<delay xmlns='urn:xmpp:delay' stamp='x' from=''/>",
        "<stanza-id xmlns='urn:xmpp:sid:0'/>",
        f"<x xmlns='{MUC_USER}'/>",
        f"<x xmlns='{MUC_USER}'><invite/><status/><item/><password/></x>",
        f"<x xmlns='{MUC_USER}'><item><reason/></item><status code=''/></x>",
        "<x xmlns='jabber:x:conference'/>",
        "<error/>",
        f"<error><text xmlns='{STANZAS}'/></error>",
    ]
)


@given(
    st.sampled_from(["message", "presence"]),
    st.dictionaries(st.sampled_from(["from", "type", "id", "to"]), _attr.filter(bool), max_size=4),
    st.lists(_child, max_size=6),
)
@settings(max_examples=100, deadline=None)
def test_malformed_stanzas_never_raise(
    name: str, attrs: dict[str, str], children: list[str]
) -> None:
    el = fromstring(f"<{name} xmlns='jabber:client'>{''.join(children)}</{name}>")
    for key, value in attrs.items():
        el.set(key, value)
    read_message(el)
    read_presence(el)
    muc = Muc()
    muc.joining(ROOM, "eevee")
    muc.presence(read_presence(el))  # whatever it says, folding it does not raise


# -- presences ---------------------------------------------------------------------------------


def test_presence_of_an_occupant() -> None:
    p = presence("alice", jid="alice@example.org/phone")
    assert (p.sender, p.available, p.codes) == (f"{ROOM}/alice", True, frozenset())
    assert p.real_jid == "alice@example.org/phone"
    assert (p.new_nick, p.reason, p.error) == (None, None, None)


def test_presence_codes_nick_change_and_kick() -> None:
    p = presence("alice", "303", "110", kind="unavailable", new_nick="alicia")
    assert (p.available, p.codes, p.new_nick) == (False, frozenset({"303", "110"}), "alicia")
    kick = presence("bob", "307", kind="unavailable", reason="flooding")
    assert (kick.codes, kick.reason) == (frozenset({"307"}), "flooding")


def test_presence_without_muc_parts() -> None:
    p = read_presence(xml("<presence from='alice@example.org/phone'/>"))
    assert (p.available, p.codes, p.real_jid, p.new_nick, p.reason) == (
        True,
        frozenset(),
        None,
        None,
        None,
    )
    gone = read_presence(xml("<presence type='unavailable'/>"))
    assert (gone.sender, gone.available) == ("", False)


def test_error_presence() -> None:
    p = read_presence(
        xml(
            f"<presence from='{ROOM}/eevee' type='error'><x xmlns='http://jabber.org/protocol/muc'/>"
            f"<error type='cancel' by='{ROOM}'><conflict xmlns='{STANZAS}'/></error></presence>"
        )
    )
    assert (p.available, p.error) == (False, "conflict")
