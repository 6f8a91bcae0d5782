"""Envelope encoding and decoding, ids, timestamps, dead letters (no server needed)."""

from __future__ import annotations

import base64
import json
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ValidationError

from eeveepy.errors import EnvelopeError
from eeveepy.protocol.codec import (
    AnyEnvelopeDecoder,
    EnvelopeDecoder,
    EnvelopeEncoder,
    IdFactory,
    dead_letter,
    describe_validation_error,
    dump_model,
    format_timestamp,
)
from eeveepy.protocol.models import (
    BODY_MODELS,
    Body,
    ChatEvent,
    ChatEventType,
    ChatMessage,
    ChatUser,
    CommandInvocation,
    CommandRegistration,
    CommandRejected,
    CommandResult,
    CommandSync,
    CommandUnregistration,
    ConnectorControl,
    ConnectorControlResult,
    Control,
    ControlAction,
    ControlResult,
    DeadLetter,
    Envelope,
    ErrorReply,
    LogLevel,
    LogRecord,
    OperatorStatus,
    OutgoingMessage,
    Ping,
    Pong,
    RateLimit,
    Ready,
    SupervisorStatus,
    body_model,
)

SOURCE = "test.x"
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")

USER = ChatUser(id="alice", name="Alice")
CHAT = ChatMessage(platform="irc", network="libera", room="#foo.bar", user=USER, text="hello there")


def samples() -> list[Body]:
    """One minimal (and a few fuller) bodies of every kind of the protocol."""
    return [
        CHAT,
        ChatMessage(
            platform="irc",
            network="libera",
            room="#x",
            user=ChatUser(id="b", name="Bé", account="bob", host="u@h"),
            text="ünïcödé ☃ 😀",
            raw="\x02bold\x02",
            private=True,
            mentioned=True,
            message_id="m1",
        ),
        ChatEvent(platform="irc", network="libera", event=ChatEventType.JOIN),
        ChatEvent(
            platform="irc",
            network="libera",
            event=ChatEventType.KICK,
            room="#r",
            user=USER,
            target=ChatUser(id="bob", name="bob"),
            text="bye",
        ),
        OutgoingMessage(platform="irc", network="libera", target="#foo", text="hi\nthere"),
        CommandRegistration(operator="echo", name="echo"),
        CommandRegistration(
            operator="echo",
            name="echo-2",
            aliases=["e"],
            pattern=r"(?P<text>.*)",
            permission="admin",
            rate_limit=RateLimit(count=3, period=1.5),
        ),
        CommandInvocation(command="echo", message=CHAT),
        CommandResult(ok=True),
        CommandResult(ok=False, message="boom"),
        CommandSync(router="router"),
        CommandRejected(name="bad", operator="echo", reason="bad regex"),
        CommandUnregistration(operator="echo", name="echo-2"),
        LogRecord(operator="echo", level=LogLevel.INFO, event="started"),
        LogRecord(
            operator="echo",
            level=LogLevel.ERROR,
            event="boom",
            fields={"n": 1, "nested": {"a": [1, 2.5, None, "x"]}, "ok": True},
        ),
        Control(action=ControlAction.HALT),
        ControlResult(ok=True, operators=[OperatorStatus(id="echo", state="running")]),
        Ping(),
        Pong(operator="echo", state="running"),
        Ready(operator="echo", pid=1234),
        SupervisorStatus(
            supervisor="main", pid=1, started=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        ),
        DeadLetter(subject="eevee.x", reason="bad", receiver="echo", size=3, payload="abc"),
        ErrorReply(error="ValueError", message="nope"),
        ConnectorControl(action="names", room="#ops"),
        ConnectorControl(action="join", room="#secret", key="hunter2", reason=None),
        ConnectorControlResult(ok=True, message="3 users", users=["alice", "bob", "eevee"]),
        ConnectorControlResult(ok=False),
    ]


def valid_envelope_dict(**changes: Any) -> dict[str, Any]:
    """A valid chat.message envelope as a JSON object, with ``changes`` applied."""
    _, payload = EnvelopeEncoder(SOURCE).encode(CHAT)
    data: dict[str, Any] = json.loads(payload)
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return data


def reason_of(payload: bytes | dict[str, Any] | list[Any], model: type[Body] = ChatMessage) -> str:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    with pytest.raises(EnvelopeError) as info:
        EnvelopeDecoder(model).decode(raw, "eevee.chat.in.irc.libera.x")
    assert info.value.subject == "eevee.chat.in.irc.libera.x"
    assert info.value.payload == raw
    assert str(info.value).startswith("eevee.chat.in.irc.libera.x: ")
    return info.value.reason


# -- encode / decode round trip ------------------------------------------------------------


def test_samples_cover_every_body_kind() -> None:
    assert {type(b) for b in samples()} == set(BODY_MODELS)
    kinds = [m.KIND for m in BODY_MODELS]
    assert len(set(kinds)) == len(kinds)
    assert all(kinds)
    for model in BODY_MODELS:
        assert body_model(model.KIND) is model
    assert body_model("no.such.kind") is None


@pytest.mark.parametrize("body", samples(), ids=lambda b: type(b).__name__)
def test_encoded_envelope_decodes(body: Body) -> None:
    encoder = EnvelopeEncoder(SOURCE)
    msg_id, payload = encoder.encode(body, {"trace": "t-1"})

    env = EnvelopeDecoder(type(body)).decode(payload)
    assert env.v == 1
    assert env.kind == body.KIND
    assert env.id == msg_id
    assert env.source == SOURCE
    assert env.headers == {"trace": "t-1"}
    assert env.trace == "t-1"
    assert env.body == body
    assert type(env.body) is type(body)

    # The same bytes are a valid generic envelope whose body is the body's JSON.
    any_env = AnyEnvelopeDecoder().decode(payload)
    assert any_env.kind == body.KIND
    assert any_env.body == json.loads(dump_model(body))
    assert type(body).model_validate(any_env.body) == body

    # And what pydantic itself would accept for Envelope[Model].
    direct = Envelope[type(body)].model_validate_json(payload)  # type: ignore[misc]
    assert direct.body == body


def test_encoded_envelope_is_compact_json_with_fixed_fields() -> None:
    _, payload = EnvelopeEncoder(SOURCE).encode(Ping())
    data = json.loads(payload)
    assert list(data) == ["v", "source", "kind", "id", "timestamp", "headers", "body"]
    assert data["headers"] == {}
    assert data["body"] == {}


def test_explicit_id_and_timestamp() -> None:
    when = datetime(2026, 11, 22, 4, 4, 5, 123456, tzinfo=timezone(timedelta(hours=1)))
    msg_id, payload = EnvelopeEncoder(SOURCE).encode(Ping(), msg_id="my-id", timestamp=when)
    assert msg_id == "my-id"
    data = json.loads(payload)
    assert data["timestamp"] == "2026-11-22T03:04:05.123456Z"
    env = EnvelopeDecoder(Ping).decode(payload)
    assert env.id == "my-id"
    assert env.timestamp == when
    assert env.timestamp.utcoffset() == timedelta(0)


def _reference(source: str, body: Body, msg_id: str, when: datetime, headers: Any) -> bytes:
    """An envelope as the protocol writes it, built the slow way: compact JSON, these keys in
    this order, the source ASCII-escaped, the timestamp in UTC with microseconds and Z, the
    headers in UTF-8, the body as pydantic dumps it."""
    stamp = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    parts = [
        ("v", "1"),
        ("source", json.dumps(source)),
        ("kind", json.dumps(body.KIND)),
        ("id", json.dumps(msg_id)),
        ("timestamp", json.dumps(stamp)),
        ("headers", json.dumps(headers or {}, ensure_ascii=False, separators=(",", ":"))),
        ("body", body.model_dump_json()),
    ]
    return ("{" + ",".join(f'"{key}":{value}' for key, value in parts) + "}").encode()


@pytest.mark.parametrize("headers", [None, {}, {"trace": "t-1", "note": "é ☃"}])
@pytest.mark.parametrize("body", samples(), ids=lambda b: type(b).__name__)
def test_encoded_bytes_are_the_reference(body: Body, headers: dict[str, str] | None) -> None:
    encoder = EnvelopeEncoder("sourcé")
    when = datetime(2026, 11, 22, 4, 4, 5, 120, tzinfo=timezone(timedelta(hours=1)))
    msg_id, payload = encoder.encode(body, headers, msg_id="my-id", timestamp=when)
    assert payload == _reference("sourcé", body, "my-id", when, headers)
    # With the id or the time it makes itself (or both), read back from what it wrote.
    for given in (None, None, None, "given-id"):
        msg_id, payload = encoder.encode(body, headers, msg_id=given)
        assert given is None or msg_id == given
        stamp = datetime.strptime(json.loads(payload)["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert payload == _reference("sourcé", body, msg_id, stamp.replace(tzinfo=UTC), headers)


def test_an_id_and_its_timestamp_are_of_one_reading_of_the_clock() -> None:
    encoder = EnvelopeEncoder(SOURCE)
    for _ in range(2000):
        msg_id, payload = encoder.encode(Ping())
        stamp = datetime.fromisoformat(json.loads(payload)["timestamp"])
        ms = int(stamp.timestamp() * 1000)
        assert msg_id[:10] == IdFactory().at(ms)[:10]


def test_trace_defaults_to_the_envelope_id() -> None:
    msg_id, payload = EnvelopeEncoder(SOURCE).encode(Ping())
    assert EnvelopeDecoder(Ping).decode(payload).trace == msg_id


def test_non_ascii_headers_and_source_round_trip() -> None:
    headers = {"trace": "abc", "note": "héllo ☃ 日本語 😀", "ключ": "значение"}
    _, payload = EnvelopeEncoder("sourcé").encode(CHAT, headers)
    assert "日本語".encode() in payload  # written as UTF-8, not \u escapes
    env = EnvelopeDecoder(ChatMessage).decode(payload)
    assert env.headers == headers
    assert env.source == "sourcé"


def test_a_body_without_kind_is_refused() -> None:
    class NoKind(Body):
        x: int = 1

    class EmptyKind(Body):
        KIND: ClassVar[str] = ""

    encoder = EnvelopeEncoder(SOURCE)
    for body in (Body(), NoKind(), EmptyKind()):
        with pytest.raises(EnvelopeError, match="KIND"):
            encoder.encode(body)


def test_decoding_an_empty_kind_is_refused() -> None:
    reason = reason_of(valid_envelope_dict(kind=""), Ping)
    assert reason.startswith("kind: ")


# -- ids and timestamps ------------------------------------------------------------------------


def test_ids_are_unique_and_sort_in_creation_order() -> None:
    make = IdFactory()
    ids = [make() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == 26 for i in ids)
    assert set("".join(ids[:1000])) <= CROCKFORD
    # The time part is the current millisecond.
    assert ids[0][:10] <= IdFactory()()[:10]


def test_ids_sort_across_milliseconds_and_factories_differ() -> None:
    make = IdFactory()
    first = make()
    time.sleep(0.003)
    second = make()
    assert first[:10] < second[:10]
    assert first < second
    other = IdFactory()
    assert len({other() for _ in range(1000)} | {make() for _ in range(1000)}) == 2000


def test_encoder_ids_are_unique() -> None:
    encoder = EnvelopeEncoder(SOURCE)
    ids = [encoder.encode(Ping())[0] for _ in range(2000)] + [encoder.new_id() for _ in range(10)]
    assert len(set(ids)) == len(ids)


def test_timestamps_are_utc_with_z() -> None:
    before = datetime.now(UTC)
    _, payload = EnvelopeEncoder(SOURCE).encode(Ping())
    after = datetime.now(UTC)
    text = json.loads(payload)["timestamp"]
    assert TS_RE.match(text), text
    env = EnvelopeDecoder(Ping).decode(payload)
    assert env.timestamp.tzinfo is not None
    assert env.timestamp.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= env.timestamp <= after + timedelta(seconds=1)


def test_format_timestamp_converts_to_utc() -> None:
    when = datetime(2026, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert format_timestamp(when) == "2025-12-31T23:30:00.000000Z"
    assert format_timestamp(datetime(2026, 5, 6, 7, 8, 9, 10, tzinfo=UTC)) == (
        "2026-05-06T07:08:09.000010Z"
    )


def test_decoded_offset_timestamps_keep_the_instant() -> None:
    data = valid_envelope_dict(timestamp="2026-01-01T01:30:00+02:00")
    env = EnvelopeDecoder(ChatMessage).decode(json.dumps(data).encode())
    assert env.timestamp == datetime(2025, 12, 31, 23, 30, tzinfo=UTC)
    assert env.timestamp.tzinfo is not None


# -- decode errors ---------------------------------------------------------------------------


def test_decode_invalid_utf8() -> None:
    reason = reason_of(b"\xff\xfe not json")
    assert reason.startswith("(payload): Invalid JSON")


def test_decode_invalid_utf8_inside_a_json_string() -> None:
    _, payload = EnvelopeEncoder(SOURCE).encode(CHAT, {"note": "é"})
    reason = reason_of(payload.replace("é".encode(), b"\xff"))
    assert reason.startswith("(payload): Invalid JSON")
    assert "unicode" in reason


def test_decode_not_json() -> None:
    assert reason_of(b"hello").startswith("(payload): Invalid JSON")
    assert reason_of(b"").startswith("(payload): Invalid JSON")
    assert reason_of(b'{"v": 1,').startswith("(payload): Invalid JSON")


def test_decode_json_of_the_wrong_type() -> None:
    assert reason_of([1, 2]) == "(payload): Input should be an object"
    assert reason_of(b'"text"') == "(payload): Input should be an object"
    assert reason_of(b"null") == "(payload): Input should be an object"


def test_decode_missing_body() -> None:
    assert reason_of(valid_envelope_dict(body=...)) == "body: Field required"
    with pytest.raises(EnvelopeError, match="body: Field required"):
        AnyEnvelopeDecoder().decode(json.dumps(valid_envelope_dict(body=...)).encode())


def test_decode_missing_metadata() -> None:
    for key in ("kind", "id", "source", "timestamp"):
        assert reason_of(valid_envelope_dict(**{key: ...})) == f"{key}: Field required"


def test_decode_wrong_body_field_type() -> None:
    body = valid_envelope_dict()["body"]
    reason = reason_of(valid_envelope_dict(body={**body, "text": 5}))
    assert reason.startswith("body.text: ")
    reason = reason_of(valid_envelope_dict(body={**body, "user": "alice"}))
    assert reason.startswith("body.user: ")
    reason = reason_of(valid_envelope_dict(body={**body, "user": {"id": "a"}}))
    assert reason == "body.user.name: Field required"
    reason = reason_of(valid_envelope_dict(body={**body, "style": "shout"}))
    assert reason.startswith("body.style: ")


def test_any_decoder_wants_a_body_object() -> None:
    with pytest.raises(EnvelopeError) as info:
        AnyEnvelopeDecoder().decode(json.dumps(valid_envelope_dict(body=[1])).encode())
    assert info.value.reason.startswith("body: ")


def test_decode_wrong_header_type() -> None:
    assert reason_of(valid_envelope_dict(headers={"n": 1})).startswith("headers.n: ")


def test_decode_timestamp_without_timezone() -> None:
    reason = reason_of(valid_envelope_dict(timestamp="2026-01-01T00:00:00"))
    assert reason.startswith("timestamp: ")
    assert "timezone" in reason


def test_decode_timestamp_not_a_date() -> None:
    assert reason_of(valid_envelope_dict(timestamp="yesterday")).startswith("timestamp: ")


def test_decode_unsupported_version() -> None:
    assert reason_of(valid_envelope_dict(v=2)) == "v: Input should be 1"
    # A missing version means version 1.
    env = EnvelopeDecoder(ChatMessage).decode(json.dumps(valid_envelope_dict(v=...)).encode())
    assert env.v == 1


def test_decode_wrong_kind() -> None:
    # A body that fits the model but a kind that does not.
    reason = reason_of(valid_envelope_dict(kind="chat.event"))
    assert reason == "unexpected kind 'chat.event' (expected 'chat.message')"
    _, payload = EnvelopeEncoder(SOURCE).encode(CHAT)
    reason = reason_of(payload, Ping)
    assert reason == "unexpected kind 'chat.message' (expected 'ping')"


def test_decode_another_kind_reports_the_kind_not_its_body() -> None:
    # A body of another kind fails the model's required fields; the reason names the kind.
    _, payload = EnvelopeEncoder(SOURCE).encode(Ping())
    assert reason_of(payload) == "unexpected kind 'ping' (expected 'chat.message')"
    _, payload = EnvelopeEncoder(SOURCE).encode(
        ChatEvent(platform="irc", network="n", event=ChatEventType.JOIN)
    )
    assert reason_of(payload) == "unexpected kind 'chat.event' (expected 'chat.message')"
    # The right kind with a broken body still gets the field-level reason.
    body = valid_envelope_dict()["body"]
    del body["user"]
    assert reason_of(valid_envelope_dict(body=body)) == "body.user: Field required"
    # No readable kind: the validation errors as they are.
    assert reason_of(valid_envelope_dict(kind=7, body={})).startswith("kind: ")


def test_decode_deeply_nested_json() -> None:
    for payload in (b"[" * 100_000, b'{"kind": "x", "body": ' + b"[" * 100_000):
        assert reason_of(payload).startswith("(payload): Invalid JSON")


def test_unknown_fields_are_ignored() -> None:
    data = valid_envelope_dict(extra="x")
    data["body"]["future_field"] = {"a": 1}
    env = EnvelopeDecoder(ChatMessage).decode(json.dumps(data).encode())
    assert env.body == CHAT


# -- describe_validation_error ---------------------------------------------------------------


class _Many(BaseModel):
    a: int
    b: int
    c: int
    d: int
    e: int
    f: int
    g: int


def test_describe_validation_error_limits_the_count() -> None:
    with pytest.raises(ValidationError) as info:
        _Many.model_validate({})
    text = describe_validation_error(info.value)
    assert text == (
        "a: Field required; b: Field required; c: Field required; d: Field required; "
        "e: Field required; and 2 more"
    )
    assert describe_validation_error(info.value, limit=2) == (
        "a: Field required; b: Field required; and 5 more"
    )
    assert describe_validation_error(info.value, limit=7).count(";") == 6
    assert "more" not in describe_validation_error(info.value, limit=7)


def test_describe_validation_error_paths() -> None:
    data = valid_envelope_dict(kind="command.register", body={"operator": "o", "name": "x"})
    data["body"]["aliases"] = ["ok", 3]
    with pytest.raises(ValidationError) as info:
        Envelope[CommandRegistration].model_validate_json(json.dumps(data))
    assert describe_validation_error(info.value) == (
        "body.aliases.1: Input should be a valid string"
    )
    with pytest.raises(ValidationError) as info:
        Envelope[Ping].model_validate_json(b"[]")
    assert describe_validation_error(info.value) == "(payload): Input should be an object"


# -- dead letters ----------------------------------------------------------------------------


def test_dead_letter_small_text() -> None:
    letter = dead_letter("eevee.in.x", "bad", "echo", b'{"a": "\xc3\xa9"}')
    assert letter == DeadLetter(
        subject="eevee.in.x",
        reason="bad",
        receiver="echo",
        size=11,
        payload='{"a": "é"}',
        encoding="utf-8",
        truncated=False,
    )


def test_dead_letter_truncates_at_the_limit() -> None:
    exact = dead_letter("s.x", "r", "o", b"x" * 4096)
    assert (exact.truncated, exact.size, len(exact.payload)) == (False, 4096, 4096)
    over = dead_letter("s.x", "r", "o", b"y" * 100_000)
    assert over.truncated
    assert over.size == 100_000
    assert over.payload == "y" * 4096
    assert over.encoding == "utf-8"
    small = dead_letter("s.x", "r", "o", b"abcdef", limit=4)
    assert (small.payload, small.size, small.truncated) == ("abcd", 6, True)


def test_dead_letter_base64_for_non_utf8() -> None:
    raw = b"\xff\xfe not json"
    letter = dead_letter("s.x", "r", "o", raw)
    assert letter.encoding == "base64"
    assert base64.b64decode(letter.payload) == raw
    assert letter.size == len(raw)
    assert not letter.truncated

    big = bytes(range(256)) * 100
    letter = dead_letter("s.x", "r", "o", big, limit=1000)
    assert letter.encoding == "base64"
    assert letter.truncated
    assert letter.size == len(big)
    assert base64.b64decode(letter.payload) == big[:1000]


def test_dead_letter_cut_inside_a_utf8_character_stays_text() -> None:
    raw = "é".encode() * 10  # 20 bytes; a cut at 5 splits the third character
    letter = dead_letter("s.x", "r", "o", raw, limit=5)
    assert letter.encoding == "utf-8"
    assert letter.payload == "éé"
    assert letter.truncated
    assert letter.size == 20
    snow = dead_letter("s.x", "r", "o", ("a" + "☃" * 3).encode(), limit=6)
    assert (snow.payload, snow.encoding) == ("a☃", "utf-8")


def test_dead_letter_is_a_publishable_body() -> None:
    letter = dead_letter("s.x", "r", "o", b"\x00\xff" * 3000)
    _, payload = EnvelopeEncoder(SOURCE).encode(letter)
    assert EnvelopeDecoder(DeadLetter).decode(payload).body == letter


def test_a_body_with_a_lone_surrogate_is_an_envelope_error() -> None:
    from eeveepy.errors import EnvelopeError
    from eeveepy.protocol.codec import EnvelopeEncoder
    from eeveepy.protocol.models import Ready

    encoder = EnvelopeEncoder("test")
    with pytest.raises(EnvelopeError, match="cannot be encoded"):
        encoder.encode(Ready(operator="op\ud800", pid=1))
    with pytest.raises(EnvelopeError, match="cannot be encoded"):
        encoder.encode(Ready(operator="op", pid=1), {"h": "\udcff"})
