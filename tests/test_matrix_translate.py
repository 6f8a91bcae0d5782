"""The Matrix connector's pure parts: settings, state files, markup, translation, timelines."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from eeveepy.errors import MatrixTargetError, RefusedError
from eeveepy.protocol.models import ChatEventType, MessageStyle, OutgoingMessage
from operators.matrix.markup import markdown_to_html, split_text
from operators.matrix.settings import MatrixSettings, network_name
from operators.matrix.store import Credentials, StateStore
from operators.matrix.timeline import after_own_join, fresh, is_own_join
from operators.matrix.translate import (
    MatrixOutbound,
    chat_event,
    chat_message,
    message_content,
    render,
    thread_of,
)

ME = "@eevee:example.org"
ROOM = "!opaqueRoomIdWithoutServer"  # room version 12: no ":server" part


def names(user: str) -> str:
    return {"@alice:example.org": "Alice"}.get(user, user)


def message(content: Any, **event: Any) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "sender": "@alice:example.org",
        "event_id": "$ev1",
        "origin_server_ts": 1_000_000,
        "content": content,
        **event,
    }


def settings(**more: Any) -> MatrixSettings:
    return MatrixSettings.model_validate(
        {"homeserver": "https://hs.example.org/", "user_id": ME, "password": "s3cret", **more}
    )


# -- settings ----------------------------------------------------------------------------------


def test_settings_defaults_and_network() -> None:
    s = settings()
    assert s.homeserver == "https://hs.example.org"
    assert network_name(s, "matrix.work") == "work"
    assert network_name(s, "other") == "example.org"
    assert network_name(settings(network="x"), "matrix.work") == "x"


@pytest.mark.parametrize(
    ("more", "problem"),
    [
        ({"homeserver": "hs.example.org"}, "http:// or https:// URL"),
        ({"user_id": "eevee"}, "full Matrix user id"),
        ({"rooms": ["general"]}, "not a room id"),
        ({"invite_allow": ["!room"]}, "neither a user id"),
        ({"password": None}, "give a password"),
        ({"access_token": "t"}, "needs the device_id"),
        ({"password": None, "password_file": "/nonexistent/pw"}, "cannot read /nonexistent/pw"),
        ({"reconnect_min": 5, "reconnect_max": 1}, "reconnect_max"),
        ({"surprise": 1}, "Extra inputs"),
    ],
)
def test_settings_errors_say_what_to_fix(more: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        settings(**more)


def test_secrets_are_never_shown(tmp_path: Path) -> None:
    s = settings(access_token="tok-123", device_id="DEV", password="pw-456")
    shown = repr(s) + str(s) + s.model_dump_json()
    assert "tok-123" not in shown
    assert "pw-456" not in shown
    assert s.given_token() == "tok-123"
    (tmp_path / "pw").write_text("from-file\n")
    s2 = settings(password=None, password_file=str(tmp_path / "pw"))
    assert s2.login_password() == "from-file"
    creds = Credentials("https://hs", ME, "DEV", "tok-789")
    assert "tok-789" not in repr(creds)


def test_invite_allow_by_user_or_server() -> None:
    s = settings(invite_allow=["@boss:example.org", "trusted.org"])
    assert s.allowed_inviter("@boss:example.org")
    assert s.allowed_inviter("@anyone:trusted.org")
    assert not s.allowed_inviter("@mallory:example.org")
    assert not s.allowed_inviter("@boss:evil.org")


# -- state files -------------------------------------------------------------------------------


def test_store_round_trip_private_and_per_account(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "data", "https://hs", ME)
    assert store.credentials() is None
    assert store.sync_token() is None
    store.save_credentials(Credentials("https://hs", ME, "DEV", "tok"))
    store.save_sync_token("s42_1")
    assert store.credentials() == Credentials("https://hs", ME, "DEV", "tok")
    assert store.sync_token() == "s42_1"
    mode = stat.S_IMODE((tmp_path / "data" / "credentials.json").stat().st_mode)
    assert mode == 0o600
    other = StateStore(tmp_path / "data", "https://hs", "@other:example.org")
    assert other.credentials() is None  # written for another account: ignored
    assert other.sync_token() is None
    (tmp_path / "data" / "sync.json").write_text("{not json")
    assert store.sync_token() is None  # damaged: as if never written
    store.forget_credentials()
    assert store.credentials() is None


# -- markup ------------------------------------------------------------------------------------


def test_markdown_to_html() -> None:
    assert markdown_to_html("**b** *i* _u_ `c*d*`") == (
        "<strong>b</strong> <em>i</em> <em>u</em> <code>c*d*</code>"
    )
    assert markdown_to_html("<script>x</script> & 2 * 3 * 4") == (
        "&lt;script&gt;x&lt;/script&gt; &amp; 2 * 3 * 4"
    )
    assert markdown_to_html("a\nb") == "a<br>b"
    assert markdown_to_html("```py\nx < 1\n```") == "<pre><code>x &lt; 1\n</code></pre>"
    assert markdown_to_html("snake_case_name") == "snake_case_name"


@given(st.text(max_size=300), st.integers(min_value=4, max_value=64))
def test_split_text_fits_and_keeps_everything(text: str, limit: int) -> None:
    pieces = split_text(text, limit)
    assert all(len(p.encode()) <= limit for p in pieces)
    joined = "".join(pieces)
    assert joined.replace("\n", "") == text.replace("\n", "")


# -- inbound -----------------------------------------------------------------------------------


def test_text_notice_emote_become_chat_messages() -> None:
    msg = chat_message(message({"msgtype": "m.text", "body": "!echo hi"}), ROOM, "net", names)
    assert msg is not None
    assert (msg.platform, msg.network, msg.room) == ("matrix", "net", ROOM)
    assert (msg.user.id, msg.user.account, msg.user.name) == (
        "@alice:example.org",
        "@alice:example.org",
        "Alice",
    )
    assert (msg.text, msg.message_id, msg.style) == ("!echo hi", "$ev1", MessageStyle.MESSAGE)
    notice = chat_message(message({"msgtype": "m.notice", "body": "n"}), ROOM, "net", names)
    emote = chat_message(message({"msgtype": "m.emote", "body": "waves"}), ROOM, "net", names)
    assert notice is not None
    assert notice.style is MessageStyle.NOTICE
    assert emote is not None
    assert emote.style is MessageStyle.ACTION


def test_html_is_kept_raw_and_reply_fallback_stripped() -> None:
    content = {
        "msgtype": "m.text",
        "body": "> <@bob:example.org> earlier\n\n!echo answer",
        "format": "org.matrix.custom.html",
        "formatted_body": "<mx-reply>...</mx-reply>!echo answer",
        "m.relates_to": {"m.in_reply_to": {"event_id": "$earlier"}},
    }
    msg = chat_message(message(content), ROOM, "net", names)
    assert msg is not None
    assert msg.text == "!echo answer"
    assert msg.raw == "<mx-reply>...</mx-reply>!echo answer"
    assert (msg.reply_to, msg.thread) == ("$earlier", None)


def test_a_thread_message_says_its_thread_and_no_reply_from_the_fallback() -> None:
    relates = {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": True}
    relates["m.in_reply_to"] = {"event_id": "$last-in-thread"}
    content = {"msgtype": "m.text", "body": "!echo x", "m.relates_to": relates}
    msg = chat_message(message(content), ROOM, "net", names)
    assert msg is not None
    assert (msg.thread, msg.reply_to) == ("$root", None)
    relates["is_falling_back"] = False  # a real reply inside the thread
    msg = chat_message(message(content), ROOM, "net", names)
    assert msg is not None
    assert (msg.thread, msg.reply_to) == ("$root", "$last-in-thread")


def test_mentions() -> None:
    def mentioned(content: dict[str, Any]) -> bool:
        msg = chat_message(message(content), ROOM, "n", names, me=ME, my_name="Eevee Bot")
        assert msg is not None
        return msg.mentioned

    assert mentioned({"msgtype": "m.text", "body": "hey", "m.mentions": {"user_ids": [ME]}})
    assert mentioned({"msgtype": "m.text", "body": "eevee: help"})
    assert mentioned({"msgtype": "m.text", "body": "ask eevee bot"})
    assert not mentioned({"msgtype": "m.text", "body": "eeveebot is not me"})


@pytest.mark.parametrize(
    "event",
    [
        message({"msgtype": "m.text", "body": 12}),
        message({"msgtype": "m.text", "body": {"x": 1}}),
        message({"msgtype": "m.image", "body": "cat.png"}),
        message({"body": "no msgtype"}),
        message("content is a string"),
        message(None),
        message({"msgtype": "m.text", "body": "x"}, sender=None),
        message({"msgtype": "m.text", "body": "x"}, event_id=7),
        message(
            {
                "msgtype": "m.text",
                "body": "* !echo edited",
                "m.new_content": {"msgtype": "m.text", "body": "!echo edited"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$ev0"},
            }
        ),
        {"type": "m.room.redaction", "sender": "@a:b", "event_id": "$r", "redacts": "$ev1"},
        {"type": "m.room.encrypted", "sender": "@a:b", "event_id": "$e", "content": {}},
        {},
    ],
)
def test_not_a_message(event: dict[str, Any]) -> None:
    assert chat_message(event, ROOM, "net", names) is None


def test_threads_and_malformed_relations() -> None:
    content = {"msgtype": "m.text", "body": "x", "m.relates_to": {"rel_type": "m.thread",
               "event_id": "$root"}}  # fmt: skip
    assert thread_of(content) == "$root"
    assert thread_of({"m.relates_to": "nonsense"}) is None
    msg = chat_message(message({**content, "m.relates_to": ["bad"]}), ROOM, "n", names)
    assert msg is not None


def member(membership: str, before: str | None = None, **more: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "m.room.member",
        "sender": "@alice:example.org",
        "state_key": "@alice:example.org",
        "event_id": "$m",
        "content": {"membership": membership, **more},
    }
    if before is not None:
        event["unsigned"] = {"prev_content": {"membership": before}}
    return event


def test_membership_and_topic_events() -> None:
    def kind(event: dict[str, Any]) -> ChatEventType | None:
        ev = chat_event(event, ROOM, "net", names)
        return None if ev is None else ev.event

    assert kind(member("join")) is ChatEventType.JOIN
    assert kind(member("leave", "join")) is ChatEventType.PART
    assert kind(member("join", "join", displayname="Al")) is ChatEventType.NICK
    assert kind(member("join", "join")) is None  # an avatar change
    kicked = {**member("leave", "join"), "sender": "@mod:example.org"}
    assert kind(kicked) is ChatEventType.KICK
    invited = {**member("invite"), "sender": "@mod:example.org"}
    ev = chat_event(invited, ROOM, "net", names)
    assert ev is not None
    assert ev.event is ChatEventType.INVITE
    assert ev.user is not None
    assert ev.target is not None
    assert (ev.user.id, ev.target.id) == ("@mod:example.org", "@alice:example.org")
    topic = {"type": "m.room.topic", "sender": "@a:b", "content": {"topic": "t"}}
    ev = chat_event(topic, ROOM, "net", names)
    assert ev is not None
    assert (ev.event, ev.text) == (ChatEventType.TOPIC, "t")
    assert chat_event({"type": "m.room.member", "content": 5}, ROOM, "net", names) is None
    assert chat_event({"type": "m.room.name", "sender": "@a:b"}, ROOM, "net", names) is None


# -- outbound ----------------------------------------------------------------------------------


def out(**more: Any) -> OutgoingMessage:
    return OutgoingMessage.model_validate(
        {"platform": "matrix", "network": "n", "target": ROOM, "text": "hi", **more}
    )


def test_render_and_content() -> None:
    (item,) = render(out(text="**hi**", reply_to="$cmd", style="notice"))
    assert isinstance(item, MatrixOutbound)
    assert (item.target, item.kind, item.reply_to) == (ROOM, "m.notice", "$cmd")
    content = message_content(item)
    assert content == {
        "msgtype": "m.notice",
        "body": "**hi**",
        "format": "org.matrix.custom.html",
        "formatted_body": "<strong>hi</strong>",
        "m.relates_to": {"m.in_reply_to": {"event_id": "$cmd"}},
    }
    threaded = message_content(item, thread="$root")
    assert threaded["m.relates_to"] == {
        "rel_type": "m.thread",
        "event_id": "$root",
        "is_falling_back": False,
        "m.in_reply_to": {"event_id": "$cmd"},
    }
    assert message_content(render(out(style="action"))[0])["msgtype"] == "m.emote"
    assert "m.relates_to" not in message_content(render(out())[0])
    assert render(out(text="  ")) == []


def test_transaction_ids() -> None:
    """An answer's is derived from what it answers (a resend is stored once); others random."""
    a = render(out(reply_to="$cmd"))[0].txn_id
    assert a == render(out(reply_to="$cmd"))[0].txn_id
    assert a != render(out(reply_to="$other"))[0].txn_id
    assert render(out())[0].txn_id != render(out())[0].txn_id


def test_long_text_is_split_under_the_event_limit() -> None:
    items = render(out(text="line\n" * 10_000, reply_to="$cmd"))
    assert len(items) > 1
    assert all(len(json.dumps(message_content(i)).encode()) < 65_536 for i in items)
    assert len({i.txn_id for i in items}) == len(items)


@pytest.mark.parametrize(
    ("target", "private"),
    [("general", False), ("#noserver", False), ("@bob:example.org", False), (ROOM, True)],
)
def test_invalid_targets_are_refused(target: str, private: bool) -> None:
    with pytest.raises(MatrixTargetError) as err:
        render(out(target=target, private=private))
    assert isinstance(err.value, RefusedError)  # dead-lettered by the kit


def test_aliases_and_users_are_targets() -> None:
    assert render(out(target="#ops:example.org"))[0].target == "#ops:example.org"
    assert render(out(target="@bob:example.org", private=True))[0].private


# -- timelines ---------------------------------------------------------------------------------


def test_after_own_join_and_freshness() -> None:
    own = {**member("join"), "sender": ME, "state_key": ME}
    rename = {**member("join", "join", displayname="x"), "sender": ME, "state_key": ME}
    before, after = message({"msgtype": "m.text", "body": "old"}), message({"body": "new"})
    assert is_own_join(own, ME)
    assert not is_own_join(rename, ME)
    assert not is_own_join(member("join"), ME)
    assert list(after_own_join([before, own, after], ME)) == [own, after]
    assert list(after_own_join([before, rename, after], ME)) == [before, rename, after]
    assert fresh({"origin_server_ts": 10_000}, 12_000, 5)
    assert not fresh({"origin_server_ts": 10_000}, 16_000, 5)
    assert fresh({"origin_server_ts": "bad"}, 16_000, 5)
