"""The sans-I/O IRC client: server lines in, lines to send and events out (no sockets).

Registration, capability negotiation, SASL and nick negotiation, including the branches real
servers rarely produce (CAP NAK, no SASL, SASL failures, 433/432/437, the wanted nick freed);
tests/test_irc.py runs the same client against real ngircd and InspIRCd + Anope.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from eeveepy.aio import Backoff
from eeveepy.connector.reconnect import reconnect_delay
from operators.irc.events import (
    CtcpQuery,
    Event,
    Invited,
    IrcUser,
    Joined,
    Kicked,
    LoggedIn,
    Message,
    NickChanged,
    NickRefused,
    OwnNickChanged,
    Parted,
    Quit,
    Registered,
    SaslFailed,
    SaslMechanisms,
    ServerError,
    ServerNotice,
    TopicChanged,
)
from operators.irc.lines import parse_line
from operators.irc.protocol import IrcProtocol
from operators.irc.settings import Channel, IrcSettings

SASL_PLAIN = {"sasl_username": "eevee", "sasl_password": "s3cret"}
USER_LINE = "USER eevee 0 * :eevee bot"


def client(**settings: Any) -> IrcProtocol:
    """A client that has just connected (its registration lines not taken yet)."""
    proto = IrcProtocol(IrcSettings(host="irc.test", **settings))
    proto.connect()
    return proto


def feed(proto: IrcProtocol, *lines: str) -> list[Event]:
    events: list[Event] = []
    for text in lines:
        line = parse_line(text)
        assert line is not None, text
        events.extend(proto.feed(line))
    return events


def sent(proto: IrcProtocol) -> list[str]:
    return proto.data_to_send()


def registered(nick: str = "eevee", **settings: Any) -> IrcProtocol:
    """A client registered as ``nick`` with no capabilities, its lines taken."""
    proto = client(**settings)
    feed(proto, ":srv CAP * LS :", f":srv 001 {nick} :Welcome")
    sent(proto)
    return proto


# -- registration and capabilities ---------------------------------------------------------------


def test_registration_lines_then_welcome() -> None:
    proto = client(password="pw")
    assert sent(proto) == ["CAP LS 302", "PASS pw", "NICK eevee", USER_LINE]
    assert feed(proto, ":srv CAP * LS :away-notify") == []
    assert sent(proto) == ["CAP END"]  # nothing wanted is offered: negotiation ends
    assert feed(proto, ":srv 001 eevee :Welcome to the network") == [Registered("eevee", "srv")]
    assert proto.state.registered
    assert sent(proto) == []


def test_wanted_capabilities_requested_across_a_multiline_ls() -> None:
    proto = client()
    sent(proto)
    feed(proto, ":srv CAP * LS * :multi-prefix away-notify")
    assert sent(proto) == []  # more LS lines to come
    feed(proto, ":srv CAP * LS :extended-join account-tag sasl=PLAIN")
    assert sent(proto) == ["CAP REQ :account-tag extended-join multi-prefix"]  # not sasl: unused
    feed(proto, ":srv CAP * ACK :account-tag extended-join multi-prefix")
    assert sent(proto) == ["CAP END"]
    assert proto.state.caps == {"account-tag", "extended-join", "multi-prefix"}


def test_cap_nak_without_sasl_ends_negotiation() -> None:
    proto = client()
    sent(proto)
    feed(proto, ":srv CAP * LS :multi-prefix chghost")
    assert sent(proto) == ["CAP REQ :chghost multi-prefix"]
    assert feed(proto, ":srv CAP * NAK :chghost multi-prefix") == []
    assert sent(proto) == ["CAP END"]
    assert proto.state.caps == set()
    assert feed(proto, ":srv 001 eevee :hi") == [Registered("eevee", "srv")]


def test_cap_nak_with_sasl_retries_sasl_alone_then_fails() -> None:
    proto = client(**SASL_PLAIN)
    sent(proto)
    feed(proto, ":srv CAP * LS :multi-prefix sasl")
    assert sent(proto) == ["CAP REQ :multi-prefix sasl"]
    assert feed(proto, ":srv CAP * NAK :multi-prefix sasl") == []
    assert sent(proto) == ["CAP REQ sasl"]
    events = feed(proto, ":srv CAP * NAK :sasl")
    assert events == [SaslFailed("the server refused the sasl capability")]
    assert sent(proto) == ["QUIT :SASL authentication failed"]
    # The connection must end: nothing more is taken from the server.
    assert feed(proto, ":srv 001 eevee :Welcome", "PING :x") == []
    assert sent(proto) == []
    assert not proto.state.registered


def test_a_server_without_sasl_is_refused_when_sasl_is_configured() -> None:
    proto = client(**SASL_PLAIN)
    sent(proto)
    events = feed(proto, ":srv CAP * LS :multi-prefix")
    assert events == [SaslFailed("the server does not offer SASL")]
    assert sent(proto) == ["QUIT :SASL authentication failed"]  # no CAP REQ, no CAP END


def test_a_server_without_cap_that_registers_is_refused_when_sasl_is_configured() -> None:
    proto = client(**SASL_PLAIN)
    sent(proto)
    events = feed(proto, ":srv 001 eevee :Welcome")  # never answered CAP LS
    assert events == [SaslFailed("the server completed registration without SASL")]
    assert sent(proto) == ["QUIT :SASL authentication failed"]
    assert not proto.state.registered


def test_sasl_mechanism_not_offered() -> None:
    proto = client(**SASL_PLAIN)
    sent(proto)
    events = feed(proto, ":srv CAP * LS :sasl=EXTERNAL,SCRAM-SHA-256")
    assert events == [SaslFailed("the server offers EXTERNAL,SCRAM-SHA-256, not PLAIN")]


def test_sasl_plain_success() -> None:
    proto = client(**SASL_PLAIN)
    sent(proto)
    feed(proto, ":srv CAP * LS :sasl=PLAIN,EXTERNAL account-notify")
    assert sent(proto) == ["CAP REQ :account-notify sasl"]
    feed(proto, ":srv CAP * ACK :account-notify sasl")
    assert sent(proto) == ["AUTHENTICATE PLAIN"]
    feed(proto, "AUTHENTICATE +")
    payload = base64.b64encode(b"\0eevee\0s3cret").decode()
    assert sent(proto) == [f"AUTHENTICATE {payload}"]
    events = feed(
        proto,
        ":srv 900 eevee eevee!u@h eeveeacct :You are now logged in as eeveeacct",
        ":srv 903 eevee :SASL authentication successful",
    )
    assert events == [LoggedIn("eeveeacct")]
    assert sent(proto) == ["CAP END"]
    assert feed(proto, ":srv 001 eevee :Welcome") == [Registered("eevee", "srv")]
    assert proto.state.account == "eeveeacct"
    assert proto.state.me() == IrcUser("eevee", None, "eeveeacct")


def test_sasl_plain_payload_in_400_byte_chunks_and_a_final_plus() -> None:
    password = "p" * (300 - len("\0eevee\0"))  # base64: exactly 400 bytes
    proto = client(sasl_username="eevee", sasl_password=password)
    feed(proto, ":srv CAP * LS :sasl", ":srv CAP * ACK :sasl", "AUTHENTICATE +")
    lines = sent(proto)[-2:]
    assert len(lines[0]) == len("AUTHENTICATE ") + 400
    assert lines[1] == "AUTHENTICATE +"  # the last chunk was full: an empty one ends it
    longer = client(sasl_username="eevee", sasl_password=password + "pppp")
    feed(longer, ":srv CAP * LS :sasl", ":srv CAP * ACK :sasl", "AUTHENTICATE +")
    chunks = [ln.removeprefix("AUTHENTICATE ") for ln in sent(longer)[-2:]]
    assert [len(c) for c in chunks] == [400, 8]
    assert base64.b64decode("".join(chunks)) == f"\0eevee\0{password}pppp".encode()


def test_sasl_external() -> None:
    proto = client(tls=True, client_cert="/nonexistent/cert.pem", sasl_mechanism="EXTERNAL")
    sent(proto)
    feed(proto, ":srv CAP * LS :sasl=EXTERNAL", ":srv CAP * ACK :sasl")
    assert sent(proto) == ["CAP REQ sasl", "AUTHENTICATE EXTERNAL"]
    feed(proto, "AUTHENTICATE +")
    assert sent(proto) == ["AUTHENTICATE +"]


@pytest.mark.parametrize("numeric", ["902", "904", "905", "906"])
def test_sasl_failure_numerics_end_the_connection(numeric: str) -> None:
    proto = client(**SASL_PLAIN)
    feed(proto, ":srv CAP * LS :sasl", ":srv CAP * ACK :sasl", "AUTHENTICATE +")
    sent(proto)
    events = feed(
        proto,
        ":srv 908 eevee PLAIN,EXTERNAL :are available SASL mechanisms",
        f":srv {numeric} eevee :SASL authentication failed",
    )
    assert events == [
        SaslMechanisms("PLAIN,EXTERNAL"),
        SaslFailed(f"server replied {numeric} SASL authentication failed"),
    ]
    assert sent(proto) == ["QUIT :SASL authentication failed"]
    assert feed(proto, ":srv 001 eevee :Welcome") == []
    assert not proto.state.registered


def test_after_a_sasl_failure_reconnects_are_slow() -> None:
    """904, then the retries: never sooner than 4x reconnect_min, slower and slower."""
    proto = client(**SASL_PLAIN, reconnect_min=1.0, reconnect_max=60.0)
    feed(proto, ":srv CAP * LS :sasl", ":srv CAP * ACK :sasl", "AUTHENTICATE +")
    assert isinstance(feed(proto, ":srv 904 eevee :failed")[-1], SaslFailed)
    for rnd in (0.0, 1.0):
        backoff = Backoff(1.0, 60.0, lambda rnd=rnd: rnd)
        delays = [reconnect_delay(backoff, auth_failed=True) for _ in range(4)]
        assert delays[0] >= 4.0
        assert delays == sorted(delays)
        assert delays[-1] == (30.0 if rnd == 0.0 else 60.0)
        # A plain disconnect retries at once (within reconnect_min)...
        plain = Backoff(1.0, 60.0, lambda rnd=rnd: rnd)
        assert reconnect_delay(plain) == 1.0
        # ... and a healthy period starts the backoff again, even after failures.
        assert reconnect_delay(backoff, healthy=True) == 1.0
    # A connector that stays down for days never overflows the backoff.
    long = Backoff(1.0, 60.0, lambda: 1.0)
    long.attempt = 5000
    assert reconnect_delay(long) == 60.0


def test_a_new_connection_starts_afresh() -> None:
    proto = client(**SASL_PLAIN)
    feed(proto, ":srv CAP * LS :multi-prefix")  # fails: no SASL
    assert proto.failed
    proto.connect()
    assert not proto.failed
    assert sent(proto) == ["CAP LS 302", "NICK eevee", USER_LINE]  # the QUIT is not kept
    assert proto.state.caps == set()


# -- nicks -----------------------------------------------------------------------------------------


def test_nick_collision_tries_alternates_then_generated_nicks() -> None:
    proto = client(alt_nicks=["eeveebot"])
    sent(proto)
    nicks = []
    for numeric in ["433", "433", "432", "436", "433", "433", "431"]:
        feed(proto, f":srv {numeric} * {proto.state.nick} :Nickname is already in use")
        [line] = sent(proto)
        nicks.append(line.removeprefix("NICK "))
    assert nicks == ["eeveebot", "eevee_", "eevee__", "eevee___", "eevee____", "eevee5", "eevee6"]
    assert feed(proto, ":srv 001 eevee6 :Welcome") == [Registered("eevee6", "srv")]
    assert proto.state.nick == "eevee6"
    assert proto.state.want_nick == "eevee"


def test_437_temporarily_unavailable_nick_but_not_channel() -> None:
    proto = client(alt_nicks=["eeveebot"])
    sent(proto)
    feed(proto, ":srv 437 * #chan :Cannot change nickname while banned on channel")
    assert sent(proto) == []  # about a channel: no new nick
    feed(proto, ":srv 437 * eevee :Nick/channel is temporarily unavailable")
    assert sent(proto) == ["NICK eeveebot"]


def test_nick_refused_after_registration_is_reported_not_retried() -> None:
    proto = registered()
    events = feed(proto, ":srv 433 eevee taken :Nickname is already in use")
    assert events == [NickRefused("taken", "Nickname is already in use")]
    assert sent(proto) == []
    assert proto.state.nick == "eevee"


def test_wanted_nick_reclaimed_when_its_holder_quits_or_renames() -> None:
    proto = client(alt_nicks=["eeveebot"])
    feed(proto, ":srv CAP * LS :", ":srv 433 * eevee :in use", ":srv 001 eeveebot :Welcome")
    sent(proto)
    assert proto.state.nick == "eeveebot"
    events = feed(proto, ":EEVEE!u@h QUIT :bye")  # the server's case mapping
    assert events == [Quit(IrcUser("EEVEE", "u@h"), "bye")]
    assert sent(proto) == ["NICK eevee"]
    # Someone took it first and then renames: try again.
    events = feed(proto, ":eevee!x@y NICK :somebody")
    assert events == [NickChanged(IrcUser("eevee", "x@y"), "somebody")]
    assert sent(proto) == ["NICK eevee"]
    events = feed(proto, ":eeveebot!u@h NICK :eevee")
    assert events == [OwnNickChanged("eevee"), NickChanged(IrcUser("eeveebot", "u@h"), "eevee")]
    assert proto.state.nick == "eevee"
    feed(proto, ":eevee2!u@h QUIT :bye", ":other!u@h NICK :eevee_")
    assert sent(proto) == []  # nothing to reclaim any more
    assert not proto.reclaim()


def test_periodic_reclaim_only_when_registered_under_another_nick() -> None:
    proto = client(alt_nicks=["eeveebot"])
    feed(proto, ":srv 433 * eevee :in use")
    sent(proto)
    assert not proto.reclaim()  # not registered yet
    feed(proto, ":srv CAP * LS :", ":srv 001 eeveebot :Welcome")
    sent(proto)
    assert proto.reclaim()
    assert sent(proto) == ["NICK eevee"]


# -- server lines ----------------------------------------------------------------------------------


def test_ping_pong_and_error() -> None:
    proto = client()
    sent(proto)
    feed(proto, "PING :irc.test.net", "PING")
    assert sent(proto) == ["PONG irc.test.net", "PONG eevee"]
    assert feed(proto, "ERROR :Closing link (ping timeout)") == [
        ServerError("Closing link (ping timeout)")
    ]


def test_isupport_tokens_and_case_mapping() -> None:
    proto = registered()
    st = proto.state
    assert st.same("Eevee[m]", "eevee{m}")  # rfc1459 until the server says otherwise
    feed(
        proto,
        ":srv 005 eevee CHANTYPES=#& CASEMAPPING=ascii NICKLEN=30 STATUSMSG=@+ WHOX "
        ":are supported by this server",
        ":srv 005 eevee PREFIX=(qov)~@+ EXCEPTS -WHOX :are supported by this server",
    )
    assert st.isupport["NICKLEN"] == "30"
    assert "WHOX" not in st.isupport
    assert st.isupport_int("NICKLEN", 9) == 30
    assert st.isupport_int("TOPICLEN", 9) == 9
    assert not st.same("Eevee[m]", "eevee{m}")
    assert st.same("EEVEE", "eevee")
    assert st.prefix_chars == "~@+"
    assert st.channel_problem("+chan") is not None  # not a CHANTYPES of this server
    assert st.channel_problem("&chan") is None


def test_joins_parts_kicks_and_accounts_are_tracked() -> None:
    proto = client()
    feed(
        proto,
        ":srv CAP * LS :extended-join account-notify",
        ":srv CAP * ACK :extended-join account-notify",
        ":srv 005 eevee WHOX :are supported",
        ":srv 001 eevee :Welcome",
    )
    sent(proto)
    st = proto.state
    events = feed(proto, ":eevee!bot@host.example JOIN #Ops * :eevee bot")
    assert events == [Joined("#Ops", IrcUser("eevee", "bot@host.example"))]
    assert st.joined == {"#ops": "#Ops"}
    assert st.user_host == "bot@host.example"
    assert sent(proto) == ["WHO #Ops %tuhnfa,417"]
    events = feed(proto, ":alice!a@h JOIN #ops alice_acct :Alice")
    assert events == [Joined("#ops", IrcUser("alice", "a@h", "alice_acct"))]
    feed(proto, ":srv 354 eevee 417 b h2 bob H carl_acct")
    assert st.accounts == {"alice": "alice_acct", "bob": "carl_acct"}
    feed(proto, ":bob!b@h2 ACCOUNT bob_acct", ":alice!a@h ACCOUNT *")
    assert st.accounts == {"bob": "bob_acct"}
    events = feed(proto, ":bob!b@h2 TOPIC #ops :new topic", ":bob!b@h2 INVITE eevee #vip")
    assert events == [
        TopicChanged("#ops", IrcUser("bob", "b@h2", "bob_acct"), "new topic"),
        Invited("#vip", IrcUser("bob", "b@h2", "bob_acct"), IrcUser("eevee", None)),
    ]
    events = feed(proto, ":bob!b@h2 PART #ops", ":bob!b@h2 QUIT :gone")
    assert events == [
        Parted("#ops", IrcUser("bob", "b@h2", "bob_acct"), None),
        Quit(IrcUser("bob", "b@h2", "bob_acct"), "gone"),
    ]
    assert st.accounts == {}
    feed(proto, ":eevee!bot@host.example JOIN #two *", ":eevee!bot@host.example PART #Two :bye")
    assert st.joined == {"#ops": "#Ops"}
    events = feed(proto, ":op!o@h KICK #OPS eevee :out")
    assert events == [Kicked("#OPS", IrcUser("op", "o@h"), IrcUser("eevee", None), "out")]
    assert st.joined == {}


def test_hidden_host_and_chghost_update_the_bots_own_host() -> None:
    proto = registered()
    feed(proto, ":eevee!bot@1.2.3.4 JOIN #a")
    feed(proto, ":srv 396 eevee cloaked.example :is now your displayed host")
    assert proto.state.user_host == "bot@cloaked.example"
    feed(proto, ":eevee!bot@cloaked.example CHGHOST ident new.example")
    assert proto.state.user_host == "ident@new.example"


def test_join_batches_channels_with_keys_first() -> None:
    proto = registered()
    proto.join([Channel(name="#a"), Channel(name="#b", key="k"), Channel(name="#c")])
    assert sent(proto) == ["JOIN #b,#a,#c k"]
    many = [Channel(name=f"#{'x' * 60}{n}") for n in range(10)]
    proto.join(many)
    lines = sent(proto)
    assert len(lines) == 3  # 62-character names, at most about 300 characters per line
    assert all(len(line.removeprefix("JOIN ")) <= 301 for line in lines)
    joined = [name for line in lines for name in line.removeprefix("JOIN ").split(",")]
    assert joined == [c.name for c in many]


# -- messages --------------------------------------------------------------------------------------


def test_messages_become_events() -> None:
    proto = registered()
    feed(proto, ":srv 005 eevee STATUSMSG=@+ :are supported")
    events = feed(
        proto,
        "@account=alice_acct;msgid=m1 :alice!a@h PRIVMSG #ops :hi eevee",
        ":alice!a@h PRIVMSG eevee :in private",
        ":alice!a@h PRIVMSG @#ops :to the ops",
        ":alice!a@h NOTICE #ops :notice",
        ":alice!a@h PRIVMSG #ops :\x01ACTION waves\x01",
        "@msgid=m2;+draft/reply=m1 :alice!a@h PRIVMSG #ops :an answer",
    )
    alice = IrcUser("alice", "a@h", "alice_acct")
    assert events == [
        Message(alice, "#ops", False, "hi eevee", "hi eevee", "message", "m1"),
        Message(alice, "alice", True, "in private", "in private", "message", None),
        Message(alice, "#ops", False, "to the ops", "to the ops", "message", None),
        Message(alice, "#ops", False, "notice", "notice", "notice", None),
        Message(alice, "#ops", False, "waves", "\x01ACTION waves\x01", "action", None),
        Message(alice, "#ops", False, "an answer", "an answer", "message", "m2", "m1"),
    ]


def test_echo_server_notices_and_ctcp() -> None:
    proto = client()
    sent(proto)
    events = feed(proto, ":srv NOTICE * :*** Looking up your hostname")
    assert events == [ServerNotice("srv", "*** Looking up your hostname")]
    feed(proto, ":srv CAP * LS :", ":srv 001 eevee :Welcome")
    sent(proto)
    assert feed(proto, ":eevee!bot@h PRIVMSG #ops :my own line") == []
    assert feed(proto, ":irc.server.net NOTICE eevee :maintenance") == [
        ServerNotice("irc.server.net", "maintenance")
    ]
    events = feed(
        proto,
        ":alice!a@h PRIVMSG eevee :\x01VERSION\x01",
        ":alice!a@h PRIVMSG eevee :\x01PING 123\x01",
        ":alice!a@h NOTICE eevee :\x01VERSION other 1.0\x01",  # a reply: never answered
    )
    assert events == [CtcpQuery("alice", "VERSION", ""), CtcpQuery("alice", "PING", "123")]
    assert sent(proto) == []  # answers go through flood control, not straight out


def test_unknown_and_malformed_lines_are_ignored() -> None:
    proto = registered()
    assert feed(proto, ":srv 372 eevee :- motd", ":alice!a@h PRIVMSG #ops", "FOO bar") == []
    assert sent(proto) == []
