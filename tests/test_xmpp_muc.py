"""Following rooms from their presences (sans-I/O :class:`~operators.xmpp.muc.Muc`), and
which invitations the connector accepts (no sockets)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from operators.xmpp.muc import Change, ChangeKind, Muc
from operators.xmpp.rooms import RoomControl
from operators.xmpp.settings import XmppSettings
from operators.xmpp.stanzas import Invite, read_message, read_presence
from tests.test_xmpp_stanzas import ME, MUC_USER, ROOM, STANZAS, presence, xml

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
    # Once in the room, an error presence (a refused nick change...) is a denial; still in.
    muc.presence(presence("eevee_", "110"))
    assert muc.presence(err) == [Change(ChangeKind.DENIED, ROOM, "eevee_", text="conflict")]
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


def test_an_invitation_through_a_room_needs_a_room_the_inviter_vouches_for() -> None:
    joined: list[str] = []
    rooms = RoomControl(Muc(), lambda: None, lambda: print)
    rooms.join = lambda room, password=None, nick=None: joined.append(room) or True  # type: ignore[method-assign]
    rooms.settings = XmppSettings(
        jid="bot@example.org",
        password="pw",
        invite_from=["alice@example.org", "ops@rooms.example.net"],
    )
    alice = "alice@example.org/phone"
    assert rooms.invited(Invite("ops@conference.example.org", alice, via_room=True))
    assert not rooms.invited(Invite("trap@conference.evil.example", alice, via_room=True))
    assert rooms.invited(Invite("trap@conference.evil.example", alice))  # direct: alice sent it
    assert not rooms.invited(Invite("x@conference.example.org", "mallory@example.org"))
    assert rooms.invited(Invite("ops@rooms.example.net", "alice@example.org", via_room=True))
    assert joined == [
        "ops@conference.example.org",
        "trap@conference.evil.example",
        "ops@rooms.example.net",
    ]
