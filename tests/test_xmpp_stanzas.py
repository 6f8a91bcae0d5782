"""Reading XMPP stanzas and following rooms from their presences (no sockets).

Stanzas are real XML in the ``jabber:client`` namespace, as the stream hands them over.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from xml.etree.ElementTree import Element, fromstring

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.xmpp.muc import Change, ChangeKind, Muc
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
    assert msg.invite == Invite(ROOM, "alice@example.org/phone", "come in", "s3cret")
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


# -- rooms -------------------------------------------------------------------------------------


def joined_room(*others: tuple[str, str | None], nick: str = "eevee") -> Muc:
    """A Muc that joined ROOM (with ``others`` already there) and got its subject."""
    muc = Muc()
    muc.joining(ROOM, nick)
    for other, real in others:
        assert muc.presence(presence(other, jid=real)) == []
    assert muc.presence(presence(nick, "110", jid=f"{ME}/eevee")) == [
        Change(ChangeKind.JOINED, ROOM, nick, ME)
    ]
    assert muc.subject(ROOM) is False  # the subject sent on joining: not a change
    return muc


def test_join_roster_then_self_presence_then_subject() -> None:
    muc = Muc()
    state = muc.joining(ROOM, "eevee", "pw")
    assert (state.joined, state.live, state.tried, state.password) == (
        False,
        False,
        ["eevee"],
        "pw",
    )
    assert muc.subject(ROOM) is False  # not joined yet: nothing happens
    assert not state.live
    # The roster: occupants already there, no events.
    assert muc.presence(presence("alice", jid="alice@example.org/phone")) == []
    assert muc.presence(presence("bob")) == []
    assert not state.joined
    # Our own presence (110), with the real JID the room shows.
    changes = muc.presence(presence("eevee", "110", "100", jid=f"{ME}/eevee"))
    assert changes == [Change(ChangeKind.JOINED, ROOM, "eevee", ME)]
    assert (state.joined, state.live, state.tried) == (True, False, [])
    assert state.occupants == {"alice": "alice@example.org", "bob": None, "eevee": ME}
    assert muc.joined() == [state]
    # History would come now; the subject makes the room live.
    assert muc.subject(ROOM) is False
    assert state.live
    assert muc.subject(ROOM.upper()) is True  # a later subject is a change (rooms folded)


def test_self_presence_without_110_before_joining() -> None:
    # Old servers do not send 110: our own nick, before we are in, is ourselves.
    muc = Muc()
    muc.joining(ROOM, "eevee")
    assert muc.presence(presence("eevee")) == [Change(ChangeKind.JOINED, ROOM, "eevee")]
    assert muc.presence(presence("eevee")) == []  # a status update, not a second join


def test_room_renames_us_on_join() -> None:
    muc = Muc()
    muc.joining(ROOM, "eevee")
    assert muc.presence(presence("Eevee (bot)", "110", "210")) == [
        Change(ChangeKind.JOINED, ROOM, "Eevee (bot)")
    ]
    assert muc.is_own(ROOM, "Eevee (bot)")
    assert not muc.is_own(ROOM, "eevee")


def test_others_join_and_part_only_once_live() -> None:
    muc = Muc()
    muc.joining(ROOM, "eevee")
    muc.presence(presence("eevee", "110"))
    assert muc.presence(presence("early")) == []  # joined, not live: still the join burst
    muc.subject(ROOM)
    assert muc.presence(presence("carol", jid="carol@example.org/x")) == [
        Change(ChangeKind.JOIN, ROOM, "carol", "carol@example.org")
    ]
    assert muc.presence(presence("carol", jid="carol@example.org/x")) == []  # status update
    assert muc.presence(presence("carol", kind="unavailable", jid="carol@example.org/x")) == [
        Change(ChangeKind.PART, ROOM, "carol", "carol@example.org")
    ]
    state = muc.get(ROOM)
    assert state is not None
    assert "carol" not in state.occupants
    assert "early" in state.occupants


def test_nick_change_of_another() -> None:
    muc = joined_room(("alice", "alice@example.org/phone"))
    changes = muc.presence(
        presence(
            "alice", "303", kind="unavailable", new_nick="alicia", jid="alice@example.org/phone"
        )
    )
    assert changes == [Change(ChangeKind.NICK, ROOM, "alice", "alice@example.org", "alicia")]
    assert muc.presence(presence("alicia", jid="alice@example.org/phone")) == []  # not a join
    state = muc.get(ROOM)
    assert state is not None
    assert "alice" not in state.occupants
    assert state.occupants["alicia"] == "alice@example.org"
    assert state.nick == "eevee"


def test_nick_change_of_self() -> None:
    muc = joined_room()
    changes = muc.presence(presence("eevee", "303", "110", kind="unavailable", new_nick="eevee2"))
    assert changes == [Change(ChangeKind.NICK, ROOM, "eevee", None, "eevee2")]
    state = muc.get(ROOM)
    assert state is not None
    assert state.nick == "eevee2"
    assert state.joined
    assert state.live
    assert muc.presence(presence("eevee2", "110")) == []  # the new presence: still in
    assert muc.is_own(ROOM, "eevee2")
    assert not muc.is_own(ROOM, "eevee")


@pytest.mark.parametrize(("code", "reason"), [("307", "be nice"), ("301", None)])
def test_kick_or_ban_of_another(code: str, reason: str | None) -> None:
    muc = joined_room(("troll", None))
    changes = muc.presence(presence("troll", code, kind="unavailable", reason=reason))
    assert changes == [Change(ChangeKind.KICK, ROOM, "troll", None, reason)]
    state = muc.get(ROOM)
    assert state is not None
    assert state.joined
    assert "troll" not in state.occupants


@pytest.mark.parametrize("code", ["307", "301"])
def test_kick_or_ban_of_self(code: str) -> None:
    muc = joined_room(("alice", None))
    changes = muc.presence(presence("eevee", code, "110", kind="unavailable", reason="bye bot"))
    assert changes == [Change(ChangeKind.KICKED, ROOM, "eevee", None, "bye bot")]
    state = muc.get(ROOM)
    assert state is not None
    assert (state.joined, state.live, state.occupants) == (False, False, {})
    assert muc.joined() == []
    # Out of the room: its presences no longer tell of joins.
    assert muc.presence(presence("dave")) == []


def test_own_part() -> None:
    muc = joined_room()
    assert muc.presence(presence("eevee", "110", kind="unavailable")) == [
        Change(ChangeKind.LEFT, ROOM, "eevee")
    ]
    assert muc.forget(ROOM) is not None
    assert muc.get(ROOM) is None
    assert muc.presence(presence("eevee", "110")) == []  # a room we do not want: ignored


def test_error_presence_refuses_the_join() -> None:
    muc = Muc()
    muc.joining(ROOM, "eevee")
    err = read_presence(
        xml(
            f"<presence from='{ROOM}/eevee' type='error'>"
            f"<error type='cancel'><conflict xmlns='{STANZAS}'/></error></presence>"
        )
    )
    assert muc.presence(err) == [Change(ChangeKind.REFUSED, ROOM, "eevee", text="conflict")]
    state = muc.joining(ROOM, "eevee_")  # the next nick is tried
    assert state.tried == ["eevee", "eevee_"]
    assert not state.joined
    # Once in the room, an error presence (a refused nick change...) changes nothing.
    muc.presence(presence("eevee_", "110"))
    assert muc.presence(err) == []
    assert state.joined


def test_presences_of_other_rooms_are_ignored() -> None:
    muc = joined_room()
    assert muc.presence(presence("alice", room="other@conference.example.org")) == []
    assert muc.presence(presence("eevee", "110", kind="unavailable", room="other@x")) == []
    assert muc.joined()[0].joined


def test_presence_of_the_room_itself_is_no_occupant() -> None:
    # Rooms send presence from their bare JID (an avatar's hash): nobody joins or parts.
    muc = joined_room()
    avatar = read_presence(
        xml(
            f"<presence from='{ROOM}'><x xmlns='vcard-temp:x:update'><photo>ab12</photo></x>"
            "</presence>"
        )
    )
    assert muc.presence(avatar) == []
    assert muc.presence(read_presence(xml(f"<presence from='{ROOM}' type='unavailable'/>"))) == []
    state = muc.get(ROOM)
    assert state is not None
    assert "" not in state.occupants
    assert state.joined


def test_rooms_are_compared_as_jids() -> None:
    muc = Muc()
    muc.joining("Ops@Conference.Example.ORG", "eevee")
    assert muc.presence(presence("eevee", "110")) == [
        Change(ChangeKind.JOINED, "Ops@Conference.Example.ORG", "eevee")
    ]
    assert muc.get(ROOM) is muc.get("OPS@conference.example.org")


def test_reset_forgets_what_the_server_forgot() -> None:
    muc = joined_room(("alice", None))
    other = muc.joining("dev@conference.example.org", "eevee", "pw")
    muc.reset()
    state = muc.get(ROOM)
    assert state is not None
    assert (state.joined, state.live, state.occupants, state.tried) == (False, False, {}, [])
    assert (other.nick, other.password) == ("eevee", "pw")  # wanted still, as before
    assert muc.joined() == []
    # Rejoining works as the first time.
    assert muc.presence(presence("alice")) == []
    assert muc.presence(presence("eevee", "110")) == [Change(ChangeKind.JOINED, ROOM, "eevee")]


def test_subject_of_an_unknown_room() -> None:
    assert Muc().subject(ROOM) is False


def test_moved_clock_is_not_needed() -> None:
    # read_message never reads the clock: a stamp in the future is kept as it is.
    msg = read_message(
        xml("<message><delay xmlns='urn:xmpp:delay' stamp='2999-01-01T00:00:00+01:00'/></message>")
    )
    assert msg.stamp == datetime(2999, 1, 1, tzinfo=timezone(timedelta(hours=1)))


def test_a_part_says_why_in_its_status() -> None:
    muc = joined_room(("alice", None))
    gone = read_presence(
        xml(
            f"<presence from='{ROOM}/alice' type='unavailable'><status>off to lunch</status>"
            f"<x xmlns='{MUC_USER}'><item affiliation='none' role='none'/></x></presence>"
        )
    )
    assert gone.reason == "off to lunch"
    assert muc.presence(gone) == [Change(ChangeKind.PART, ROOM, "alice", None, "off to lunch")]
    # A kick's reason is the item's, not the status; an available status is no reason.
    kicked = read_presence(
        xml(
            f"<presence from='{ROOM}/bob' type='unavailable'><status>mine</status>"
            f"<x xmlns='{MUC_USER}'><item role='none'><reason>the room's</reason></item>"
            "<status code='307'/></x></presence>"
        )
    )
    assert kicked.reason == "the room's"
    away = read_presence(xml(f"<presence from='{ROOM}/carol'><status>away</status></presence>"))
    assert away.reason is None
