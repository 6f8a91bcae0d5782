"""The XMPP connector's settings: validation, secrets, what needs a new session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from eeveepy.errors import AuthenticationError
from eeveepy.problems import problems
from operators.xmpp.settings import SESSION_FIELDS, MucRoom, XmppSettings, network_name

ME = "bot@example.org"
ROOM = "ops@conference.example.org"

# -- settings ----------------------------------------------------------------------------------


def make(**fields: Any) -> XmppSettings:
    base: dict[str, Any] = {"jid": ME, "password": "hunter2"}
    return XmppSettings.model_validate(base | fields)


def problem(**fields: Any) -> str:
    with pytest.raises(ValidationError) as err:
        make(**fields)
    return str(err.value)


def test_settings_defaults() -> None:
    s = make(jid=f"{ME}/laptop")
    assert s.jid == ME  # the resource is the setting's own
    assert (s.server, s.server_port, s.tls, s.resource) == (
        "example.org",
        5222,
        "starttls",
        "eevee",
    )
    assert s.secret() == "hunter2"
    assert make(tls="direct").server_port == 5223
    assert make(host="xmpp.example.net", port=5269).server == "xmpp.example.net"
    assert make(host="xmpp.example.net", port=5269).server_port == 5269


def test_settings_need_exactly_one_password(tmp_path: Path) -> None:
    assert "exactly one of password and password_file" in problem(password=None)
    secret = tmp_path / "secret"
    secret.write_text("from-file\nignored\n")
    assert "exactly one" in problem(password_file=secret)
    s = make(password=None, password_file=secret)
    assert s.secret() == "from-file"
    assert "cannot be read" in problem(password=None, password_file=tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.write_text("")
    assert make(password=None, password_file=empty).secret() == ""
    secret.unlink()  # gone after the check: a clear error, from the error tree
    with pytest.raises(AuthenticationError, match="cannot read password_file"):
        s.secret()


@pytest.mark.parametrize("host", ["xmpp.example.org", "10.0.0.1", "::2", "localhost.example.org"])
def test_plaintext_refused_to_a_host_that_is_not_loopback(host: str) -> None:
    assert "in clear" in problem(tls="plain", host=host)
    assert make(tls="plain", host=host, allow_plaintext=True).tls == "plain"


def test_plaintext_to_the_account_domain_is_refused() -> None:
    assert "in clear to example.org" in problem(tls="plain")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.8.9.10", "::1"])
def test_plaintext_to_loopback_is_allowed(host: str) -> None:
    assert make(tls="plain", host=host).server == host
    assert make(jid="bot@localhost", tls="plain").server == "localhost"


@pytest.mark.parametrize(
    "jid", ["example.org", "@example.org", "bot@", "bot@exa mple.org", " bot@example.org", ""]
)
def test_bad_account_jids(jid: str) -> None:
    assert "not an account JID" in problem(jid=jid)


def test_rooms_as_strings_or_tables() -> None:
    s = make(
        rooms=[ROOM, {"jid": "dev@conference.example.org", "nick": "eevee2", "password": "pw"}]
    )
    assert s.rooms == [
        MucRoom(jid=ROOM),
        MucRoom(jid="dev@conference.example.org", nick="eevee2", password="pw"),
    ]
    for bad in ["#ops", "conference.example.org", f"{ROOM}/nick", "", "a b@c.d"]:
        assert "not a room JID" in problem(rooms=[bad])
    assert "extra" in problem(rooms=[{"jid": ROOM, "key": "pw"}]).lower()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("nick", "bot\x00"),
        ("nick", " bot"),
        ("nick", ""),
        ("resource", "res\x01"),
        ("alt_nicks", ["ok", "bad\x07"]),
        ("alt_nicks", [""]),
        ("rooms", [{"jid": ROOM, "nick": "x\x1b"}]),
    ],
)
def test_nicks_and_resource_must_be_resources(field: str, value: Any) -> None:
    assert problem(**{field: value})


def test_good_nicks() -> None:
    s = make(
        nick="Eevee [bot] ☃", alt_nicks=["eevee_", "eevee/2"], rooms=[{"jid": ROOM, "nick": "E"}]
    )
    assert (s.nick, s.alt_nicks, s.rooms[0].nick) == ("Eevee [bot] ☃", ["eevee_", "eevee/2"], "E")


def test_invite_from() -> None:
    assert make(invite_from=["alice@example.org", "example.net"]).invite_from == [
        "alice@example.org",
        "example.net",
    ]
    assert "invite_from 'not a jid'" in problem(invite_from=["not a jid"])


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"reconnect_min": 10, "reconnect_max": 5}, "reconnect_max must be at least reconnect_min"),
        ({"reconnect_min": 0}, "greater than 0"),
        ({"reconnect_max": -1}, "greater than 0"),
        ({"port": 0}, "greater than or equal to 1"),
        ({"port": 65536}, "less than or equal to 65535"),
        ({"max_message_bytes": 63}, "greater than or equal to 64"),
        ({"max_delay": -1}, "greater than or equal to 0"),
        ({"tls": "ssl"}, "starttls"),
        ({"passwrod": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_bounds(fields: dict[str, Any], words: str) -> None:
    assert words in problem(**fields)


def test_reconnect_bounds_may_be_equal() -> None:
    s = make(reconnect_min=5, reconnect_max=5)
    assert (s.reconnect_min, s.reconnect_max) == (5, 5)


def test_the_password_never_shows() -> None:
    s = make(password="hunter2-very-secret")
    for text in (repr(s), str(s), s.model_dump_json(), str(s.model_dump()), repr(s.password)):
        assert "hunter2-very-secret" not in text
    assert s.secret() == "hunter2-very-secret"
    # The problems a failed validation reports (what users see) do not echo it either.
    for bad in ({"tls": "plain"}, {"password_file": "/etc/hostname"}, {"rooms": ["#x"]}):
        with pytest.raises(ValidationError) as err:
            make(password="pw1", **bad)
        shown = problems(err.value, "xmpp.work")
        assert shown
        assert "pw1" not in str(shown)


def test_network_name_and_session_fields() -> None:
    assert network_name(make(), "xmpp.work") == "work"
    assert network_name(make(network="corp"), "xmpp.work") == "corp"
    assert network_name(make(), "xmpp.") == ME
    assert network_name(make(), "chat") == ME
    assert {"jid", "password", "host", "tls", "resource", "nick"} <= SESSION_FIELDS
    assert not {"rooms", "styling", "max_message_bytes", "alt_nicks"} & SESSION_FIELDS
    assert SESSION_FIELDS <= set(XmppSettings.model_fields)
