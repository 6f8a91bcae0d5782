"""Tests for eeveepy.subjects: token encoding, validation, builders and parsing."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from eeveepy.errors import EeveeError, SubjectError
from eeveepy.protocol.subjects import (
    KINDS,
    SAFE_CHARS,
    ParsedSubject,
    Subjects,
    decode_token,
    encode_token,
    validate_operator_id,
    validate_prefix,
    validate_token,
)

S = Subjects()

# -- strategies ------------------------------------------------------------------------------

# Any Python str, subject-breaking characters included. Lone surrogates get their own slot:
# hypothesis drops them from a text() alphabet that is a union with st.characters().
_some_text = st.text(st.characters() | st.sampled_from([*".*>% \t\n$#!@:25E\x00😀"]), max_size=10)
any_text = st.builds(
    lambda head, surrogates, tail: head + surrogates + tail,
    _some_text,
    st.text(st.characters(categories=["Cs"]), max_size=2),
    _some_text,
)
_LOWER_DIGITS = "abcdefghijklmnopqrstuvwxyz0123456789"
simple_tokens = st.builds(
    lambda head, tail: head + tail,
    st.sampled_from(_LOWER_DIGITS),
    st.text(st.sampled_from(_LOWER_DIGITS + "_-"), max_size=12),
)
operator_ids = (
    st.lists(simple_tokens, min_size=1, max_size=4).map(".".join).filter(lambda s: len(s) <= 64)
)
prefixes = st.lists(
    st.text(st.sampled_from(_LOWER_DIGITS + "ABCXYZ_-"), min_size=1, max_size=8),
    min_size=1,
    max_size=3,
).map(".".join)
# ASCII strings built from pieces that matter to decoding (valid and invalid escapes, UTF-8
# lead and continuation bytes, surrogate bytes, safe and unsafe characters), or slices of
# real encoded tokens (cut escapes, cut UTF-8 sequences).
token_like = st.lists(
    st.sampled_from(
        [
            *("%2E", "%20", "%25", "%2A", "%C3", "%BC", "%E2", "%82", "%AC", "%F0", "%9F"),
            *("%98", "%80", "%ED", "%A0", "%B8", "%41", "%7E", "%2e", "%c3", "%G1", "%FF", "%C0"),
            *"%0123456789ABCDEFabcdefxZ-_#!@:+=~.*> $/",
        ]
    ),
    max_size=10,
).map("".join) | st.builds(
    lambda s, start, stop: encode_token(s)[start:stop],
    any_text,
    st.integers(0, 8),
    st.integers(-8, 60),
)
# Byte strings: arbitrary, or UTF-8 (surrogatepass) encodings of text, possibly cut.
byte_strings = st.binary(max_size=12) | st.builds(
    lambda s, start, stop: s.encode("utf-8", "surrogatepass")[start:stop],
    any_text,
    st.integers(0, 4),
    st.integers(-4, 60),
)


# -- encode / decode: examples ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("#foo.bar", "#foo%2Ebar"),
        ("!abc:server", "!abc:server"),
        ("room@conference.host", "room@conference%2Ehost"),
        ("a b", "a%20b"),
        ("*", "%2A"),
        (">", "%3E"),
        ("$SYS", "%24SYS"),
        ("ünïcödé", "%C3%BCn%C3%AFc%C3%B6d%C3%A9"),
        ("😀", "%F0%9F%98%80"),
        ("", "%"),
        ("%", "%25"),
        ("%25", "%2525"),
        ("a-_#!@:+=~Z9", "a-_#!@:+=~Z9"),
        ("\ud800", "%ED%A0%80"),
        ("\ud83d\ude00", "%ED%A0%BD%ED%B8%80"),
        ("tab\there", "tab%09here"),
    ],
)
def test_encode_decode_examples(raw: str, encoded: str) -> None:
    assert encode_token(raw) == encoded
    assert decode_token(encoded) == raw


@pytest.mark.parametrize(
    ("token", "fragment"),
    [
        ("", "empty"),
        ("a.b", "'.'"),
        ("a b", "' '"),
        ("*", "'*'"),
        (">", "'>'"),
        ("ü", "'ü'"),
        ("%2", "cut short"),
        ("a%", "cut short"),
        ("%%", "cut short"),
        ("%2e", "lowercase"),
        ("%c3%bc", "lowercase"),
        ("%G0", "uppercase hex"),
        ("%41", "safe character 'A'"),
        ("x%2D", "safe character '-'"),
        ("%7E", "safe character '~'"),
        ("%C3", "not valid UTF-8"),
        ("%C3A", "not valid UTF-8"),
        ("%FF", "not valid UTF-8"),
        ("%C0%AE", "not valid UTF-8"),  # overlong "."
        ("%80", "not valid UTF-8"),
    ],
)
def test_decode_rejects(token: str, fragment: str) -> None:
    with pytest.raises(SubjectError, match=None) as info:
        decode_token(token)
    assert fragment in str(info.value)
    assert isinstance(info.value, EeveeError)


def test_decode_error_says_where() -> None:
    with pytest.raises(SubjectError, match="index 3"):
        decode_token("abc%2e")
    with pytest.raises(SubjectError, match="index 1"):
        decode_token("a%E2%82")


# -- encode / decode: properties -------------------------------------------------------------


@settings(max_examples=300)
@given(any_text)
def test_roundtrip(s: str) -> None:
    assert decode_token(encode_token(s)) == s


@settings(max_examples=300)
@given(any_text)
def test_encoded_token_is_a_plain_nats_token(s: str) -> None:
    t = encode_token(s)
    assert t
    assert t.isascii()
    assert t.isprintable()
    for bad in ".*> \t\r\n":
        assert bad not in t
    assert set(t) <= SAFE_CHARS | set("%0123456789ABCDEF")


@settings(max_examples=300)
@given(token_like)
def test_encoding_is_canonical(t: str) -> None:
    try:
        s = decode_token(t)
    except SubjectError:
        return
    assert encode_token(s) == t


@settings(max_examples=300)
@given(byte_strings)
def test_decode_accepts_exactly_valid_utf8(data: bytes) -> None:
    token = "".join(chr(b) if chr(b) in SAFE_CHARS else f"%{b:02X}" for b in data) or "%"
    try:
        expected = data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        with pytest.raises(SubjectError):
            decode_token(token)
    else:
        assert decode_token(token) == expected
        assert encode_token(expected) == token


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op_id",
    ["echo", "irc.libera", "matrix.main-bot", "a", "0_x.y-1", "a" * 64, ".".join(["abcd"] * 13)],
)
def test_valid_operator_ids(op_id: str) -> None:
    assert validate_operator_id(op_id) == op_id


@pytest.mark.parametrize(
    "op_id",
    [
        "",
        "Echo",
        "irc..libera",
        ".irc",
        "irc.",
        "-irc",
        "irc._x",
        "a b",
        "irc.*",
        ">",
        "é",
        "a" * 65,
        ".".join(["abcd"] * 13) + "x",
    ],
)
def test_invalid_operator_ids(op_id: str) -> None:
    with pytest.raises(SubjectError):
        validate_operator_id(op_id)


@pytest.mark.parametrize("token", ["", "IRC", "-irc", "_x", "irc.net", "a b", "*", ">", "é"])
def test_invalid_simple_tokens(token: str) -> None:
    with pytest.raises(SubjectError, match="platform"):
        validate_token(token, "platform")
    with pytest.raises(SubjectError):
        S.chat_in(token, "net", "room")
    with pytest.raises(SubjectError):
        S.chat_event("irc", "net", token)
    with pytest.raises(SubjectError):
        S.log("echo", token)


@pytest.mark.parametrize("prefix", ["", ".", "a.", ".a", "a..b", "a b", "a.*", "a.>", "é", "a/b"])
def test_invalid_prefixes(prefix: str) -> None:
    with pytest.raises(SubjectError):
        validate_prefix(prefix)
    with pytest.raises(SubjectError):
        Subjects(prefix)


def test_invalid_verbs() -> None:
    with pytest.raises(SubjectError):
        S.operator("stop", "echo")
    with pytest.raises(SubjectError):
        S.supervisor("ready")


def test_subjects_is_frozen() -> None:
    with pytest.raises(AttributeError):
        S.prefix = "other"  # type: ignore[misc]


# -- builders: examples ----------------------------------------------------------------------


def test_builder_examples() -> None:
    assert S.chat_in("irc", "libera", "#foo.bar") == "eevee.chat.in.irc.libera.#foo%2Ebar"
    assert S.chat_in("matrix", "matrix.org", "!abc:server") == (
        "eevee.chat.in.matrix.matrix%2Eorg.!abc:server"
    )
    assert S.chat_in("xmpp", "", "room@conference.host") == (
        "eevee.chat.in.xmpp.%.room@conference%2Ehost"
    )
    assert S.chat_event("irc", "libera", "join") == "eevee.chat.event.irc.libera.join"
    assert S.chat_out("irc", "libera") == "eevee.chat.out.irc.libera"
    assert S.command_register() == "eevee.command.register"
    assert S.command_run("echo") == "eevee.command.run.echo"
    assert S.command_run("a.b c") == "eevee.command.run.a%2Eb%20c"
    assert S.log("irc.libera", "info") == "eevee.log.info.irc.libera"
    assert S.operator("ready", "echo") == "eevee.operator.ready.echo"
    assert S.operator_ready("echo") == "eevee.operator.ready.echo"
    assert S.operator_ping("irc.libera") == "eevee.operator.ping.irc.libera"
    assert S.operator_ctl("matrix.main-bot") == "eevee.operator.ctl.matrix.main-bot"
    assert S.supervisor("status") == "eevee.supervisor.status"
    assert S.supervisor("ctl") == "eevee.supervisor.ctl"
    assert S.dlq("eevee.chat.in.irc.libera.#x") == "eevee.dlq.chat.in.irc.libera.#x"


def test_custom_prefix() -> None:
    acme = Subjects("acme.bot")
    assert acme.chat_out("irc", "libera") == "acme.bot.chat.out.irc.libera"
    assert acme.pattern("chat.in.>") == "acme.bot.chat.in.>"
    assert acme.relative("acme.bot.log.info.echo") == "log.info.echo"
    assert acme.dlq("acme.bot.supervisor.ctl") == "acme.bot.dlq.supervisor.ctl"
    assert acme.parse("acme.bot.operator.ctl.irc.libera") == ParsedSubject(
        kind="operator.ctl", operator_id="irc.libera"
    )
    with pytest.raises(SubjectError):
        acme.parse("eevee.operator.ctl.echo")
    with pytest.raises(SubjectError):
        S.parse("acme.bot.operator.ctl.echo")
    with pytest.raises(SubjectError):
        acme.parse("acme.botx.supervisor.ctl")


def test_dlq_of_custom_subjects() -> None:
    assert S.dlq("eevee.custom.thing") == "eevee.dlq.custom.thing"
    assert S.parse("eevee.dlq.custom.thing") == ParsedSubject(
        kind="dlq", original="eevee.custom.thing"
    )
    assert S.dlq("eevee.dlqx") == "eevee.dlq.dlqx"
    assert S.parse("eevee.dlq.dlqx").original == "eevee.dlqx"


def test_dlq_rejects() -> None:
    with pytest.raises(SubjectError):
        S.dlq("other.chat.out.irc.libera")
    with pytest.raises(SubjectError):
        S.dlq("eevee.chat.in.>")
    with pytest.raises(SubjectError):
        S.dlq("eevee.custom.*.x")
    with pytest.raises(SubjectError):
        S.dlq("eevee.custom..x")
    with pytest.raises(SubjectError):
        S.dlq("eevee.custom x")
    with pytest.raises(SubjectError):
        S.dlq("eevee")
    with pytest.raises(SubjectError):
        S.dlq(S.dlq("eevee.supervisor.ctl"))


# -- patterns and relative -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "full"),
    [
        ("chat.in.>", "eevee.chat.in.>"),
        ("log.*.irc.>", "eevee.log.*.irc.>"),
        ("operator.ctl.>", "eevee.operator.ctl.>"),
        (">", "eevee.>"),
        ("supervisor.status", "eevee.supervisor.status"),
    ],
)
def test_pattern(relative: str, full: str) -> None:
    assert S.pattern(relative) == full


@pytest.mark.parametrize(
    "relative",
    ["", ".", "chat..in", "chat.in.", ">.chat", "chat.>.x", "a b", "chat.in\t", "a*", "b>"],
)
def test_pattern_rejects(relative: str) -> None:
    with pytest.raises(SubjectError):
        S.pattern(relative)


@pytest.mark.parametrize("subject", ["eevee", "eevee.", "eeveex.chat", "x.eevee.chat", ""])
def test_relative_rejects(subject: str) -> None:
    with pytest.raises(SubjectError):
        S.relative(subject)


# -- parse -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        "eevee.chat",
        "eevee.chat.in.irc.libera",
        "eevee.chat.in.irc.libera.room.extra",
        "eevee.chat.in.irc.libera.*",
        "eevee.chat.in.irc.libera.>",
        "eevee.chat.in.IRC.libera.room",
        "eevee.chat.in.irc.lib%2eera.room",
        "eevee.chat.event.irc.libera.Join",
        "eevee.chat.out.irc",
        "eevee.command",
        "eevee.command.register.X",
        "eevee.command.run",
        "eevee.command.run.a.b",
        "eevee.log.info",
        "eevee.log.info.Echo",
        "eevee.log.info.echo.>",
        "eevee.operator.ready",
        "eevee.operator.stop.echo",
        "eevee.operator.ctl.*",
        "eevee.operator.ctl." + "a" * 65,
        "eevee.supervisor",
        "eevee.supervisor.ready",
        "eevee.supervisor.ctl.x",
        "eevee.dlq",
        "eevee.dlq.",
        "eevee.dlq..x",
        "eevee.dlq.x.>",
        "eevee.dlq.x.*.y",
        "eevee.dlq.dlq",
        "eevee.dlq.dlq.supervisor.ctl",
        "eevee.nonsense",
        "eevee..chat.out.irc.x",
        "other.supervisor.ctl",
    ],
)
def test_parse_rejects(subject: str) -> None:
    with pytest.raises(SubjectError):
        S.parse(subject)


def test_parse_examples() -> None:
    assert S.parse("eevee.chat.in.irc.libera.#foo%2Ebar") == ParsedSubject(
        kind="chat.in", platform="irc", network="libera", room="#foo.bar"
    )
    assert S.parse("eevee.dlq.log.info.irc.libera") == ParsedSubject(
        kind="dlq", original="eevee.log.info.irc.libera"
    )
    assert S.parse("eevee.supervisor.status").kind == "supervisor.status"


@settings(max_examples=300)
@given(
    prefix=prefixes,
    platform=simple_tokens,
    network=any_text,
    room=any_text,
    event=simple_tokens,
    command=any_text,
    level=simple_tokens,
    op_id=operator_ids,
)
def test_build_parse_roundtrip(
    prefix: str,
    platform: str,
    network: str,
    room: str,
    event: str,
    command: str,
    level: str,
    op_id: str,
) -> None:
    sub = Subjects(prefix)
    cases: list[tuple[str, ParsedSubject]] = [
        (
            sub.chat_in(platform, network, room),
            ParsedSubject(kind="chat.in", platform=platform, network=network, room=room),
        ),
        (
            sub.chat_event(platform, network, event),
            ParsedSubject(kind="chat.event", platform=platform, network=network, event=event),
        ),
        (
            sub.chat_out(platform, network),
            ParsedSubject(kind="chat.out", platform=platform, network=network),
        ),
        (
            sub.chat_ctl(platform, network),
            ParsedSubject(kind="chat.ctl", platform=platform, network=network),
        ),
        (sub.command_register(), ParsedSubject(kind="command.register")),
        (
            sub.command_register("irc.libera"),
            ParsedSubject(kind="command.register", operator_id="irc.libera"),
        ),
        (sub.command_run(command), ParsedSubject(kind="command.run", command=command)),
        (sub.command_sync(), ParsedSubject(kind="command.sync")),
        (
            sub.command_rejected(op_id),
            ParsedSubject(kind="command.rejected", operator_id=op_id),
        ),
        (sub.log(op_id, level), ParsedSubject(kind="log", level=level, operator_id=op_id)),
        (sub.operator_ready(op_id), ParsedSubject(kind="operator.ready", operator_id=op_id)),
        (sub.operator_ping(op_id), ParsedSubject(kind="operator.ping", operator_id=op_id)),
        (sub.operator_ctl(op_id), ParsedSubject(kind="operator.ctl", operator_id=op_id)),
        (sub.supervisor("status"), ParsedSubject(kind="supervisor.status")),
        (sub.supervisor("ctl"), ParsedSubject(kind="supervisor.ctl")),
    ]
    assert {parsed.kind for _, parsed in cases} | {"dlq"} == KINDS
    for subject, expected in cases:
        assert subject.startswith(prefix + ".")
        assert "*" not in subject
        assert ">" not in subject
        assert all(subject.split("."))
        assert sub.parse(subject) == expected
        dead = sub.dlq(subject)
        assert dead == f"{prefix}.dlq.{sub.relative(subject)}"
        assert sub.parse(dead) == ParsedSubject(kind="dlq", original=subject)


def nats_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` matches one token, a final ``>`` one or more."""
    pat, sub = pattern.split("."), subject.split(".")
    for i, p in enumerate(pat):
        if p == ">":
            return len(sub) > i
        if i >= len(sub) or (p != "*" and p != sub[i]):
            return False
    return len(pat) == len(sub)


@settings(max_examples=150)
@given(op_id=operator_ids, other=operator_ids, level=simple_tokens)
def test_operator_id_is_last_so_wildcards_select_it(op_id: str, other: str, level: str) -> None:
    first = op_id.split(".")[0]
    instance = f"{first}.{other}"
    assume(len(instance) <= 64)
    for verb in ("ready", "ping", "ctl"):
        assert nats_matches(S.pattern(f"operator.{verb}.>"), S.operator(verb, op_id))
        assert nats_matches(S.pattern(f"operator.{verb}.{first}.>"), S.operator(verb, instance))
        assert nats_matches(S.pattern(f"operator.{verb}.*.>"), S.operator(verb, instance))
    assert nats_matches(S.pattern(f"log.*.{first}.>"), S.log(instance, level))
    assert nats_matches(S.pattern("log.>"), S.log(op_id, level))
    assert not nats_matches(S.pattern("operator.ctl.>"), S.operator_ping(op_id))


@settings(max_examples=150)
@given(token_like, st.sampled_from(["chat.in.irc.net.", "chat.out.irc.", "command.run."]))
def test_parsed_junk_rebuilds_to_the_same_subject(junk: str, head: str) -> None:
    assume(junk)
    subject = f"eevee.{head}{junk}"
    try:
        parsed = S.parse(subject)
    except SubjectError:
        return
    if parsed.kind == "chat.in":
        assert parsed.platform is not None
        assert parsed.network is not None
        assert parsed.room is not None
        assert S.chat_in(parsed.platform, parsed.network, parsed.room) == subject
    elif parsed.kind == "chat.out":
        assert parsed.platform is not None
        assert parsed.network is not None
        assert S.chat_out(parsed.platform, parsed.network) == subject
    else:
        assert parsed.kind == "command.run"
        assert parsed.command is not None
        assert S.command_run(parsed.command) == subject
