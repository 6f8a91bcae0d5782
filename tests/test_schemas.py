"""The published protocol stays in step with the code: schemas/ and docs/protocol.md."""

from __future__ import annotations

import inspect
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from eeveepy.protocol import schema
from eeveepy.protocol.codec import EnvelopeDecoder, EnvelopeEncoder, dead_letter
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
    CommandScope,
    CommandSync,
    CommandUnregistration,
    ConnectorControl,
    ConnectorControlResult,
    Control,
    ControlAction,
    ControlResult,
    ErrorReply,
    LogLevel,
    LogRecord,
    MessageStyle,
    OperatorStatus,
    OutgoingMessage,
    Ping,
    Pong,
    RateLimit,
    Ready,
    SupervisorStatus,
)
from eeveepy.protocol.subjects import KINDS as SUBJECT_KINDS
from eeveepy.runtime import contract
from eeveepy.supervisor.core import Supervisor

ROOT = Path(__file__).parents[1]
SCHEMAS = ROOT / "schemas"
PROTOCOL_DOC = ROOT / "docs" / "protocol.md"

_USER = ChatUser(id="alice", name="Alice", account="alice", host="alice@example.org")
_MESSAGE = ChatMessage(
    platform="irc",
    network="libera",
    room="#foo.bar",
    user=_USER,
    text="!echo héllo",
    raw="\x02!echo\x02 héllo",
    style=MessageStyle.ACTION,
    mentioned=True,
    message_id="m-1",
)
_STATUS = OperatorStatus(
    id="irc.libera",
    state="RUNNING",
    pid=4242,
    restarts=1,
    uptime_s=12.5,
    rss_bytes=10_000_000,
    cpu_percent=0.5,
    ping_ms=0.8,
)

# (test id, body): at least one sample per body kind, minimal ones (defaults and nulls) and
# full ones (every optional field set). test_samples_cover_every_kind keeps this complete.
SAMPLES: list[tuple[str, Body]] = [
    (
        "chat.message-min",
        ChatMessage(
            platform="irc",
            network="libera",
            room="#ops",
            user=ChatUser(id="bob", name="bob"),
            text="hi",
        ),
    ),
    ("chat.message-full", _MESSAGE),
    ("chat.event-min", ChatEvent(platform="irc", network="libera", event=ChatEventType.CONNECTED)),
    (
        "chat.event-full",
        ChatEvent(
            platform="irc",
            network="libera",
            event=ChatEventType.KICK,
            room="#ops",
            user=_USER,
            target=ChatUser(id="bob", name="bob"),
            text="spam",
        ),
    ),
    ("chat.out-min", OutgoingMessage(platform="irc", network="libera", target="#ops", text="hi")),
    (
        "chat.out-full",
        OutgoingMessage(
            platform="matrix",
            network="main",
            target="@bob:example.org",
            text="a\nb",
            style=MessageStyle.NOTICE,
            private=True,
            reply_to="$ev",
        ),
    ),
    ("command.register-min", CommandRegistration(operator="echo", name="echo")),
    (
        "command.register-full",
        CommandRegistration(
            operator="echo",
            name="echo",
            aliases=["say"],
            pattern=r"(?P<text>.*)",
            usage="<text>",
            help="Repeat text.",
            permission="users",
            rate_limit=RateLimit(count=3, period=10.5),
            scope=CommandScope(platforms=["irc"], networks=["libera"], rooms=["#ops"]),
        ),
    ),
    (
        "command.run",
        CommandInvocation(command="echo", args={"text": "héllo"}, text="héllo", message=_MESSAGE),
    ),
    ("log-min", LogRecord(operator="echo", level=LogLevel.INFO, event="started")),
    (
        "log-full",
        LogRecord(
            operator="irc.libera",
            level=LogLevel.ERROR,
            event="lost connection",
            fields={"attempt": 3, "delay": 1.5, "server": None, "tags": ["a"]},
        ),
    ),
    ("control", Control(action=ControlAction.HALT, target="irc.libera")),
    ("control-shutdown", Control(action=ControlAction.SHUTDOWN)),
    ("control.result-min", ControlResult(ok=True)),
    (
        "control.result-full",
        ControlResult(
            ok=False, message="no", operators=[_STATUS, OperatorStatus(id="echo", state="STOPPED")]
        ),
    ),
    ("ping", Ping()),
    ("pong", Pong(operator="echo", state="halted")),
    ("ready", Ready(operator="irc.libera", pid=4242)),
    (
        "supervisor.status",
        SupervisorStatus(
            supervisor="host-1",
            pid=1,
            started=datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC),
            operators=[_STATUS],
        ),
    ),
    (
        "dlq-text",
        dead_letter("eevee.chat.in.irc.libera.#ops", "body: Field required", "echo", b'{"v":1}'),
    ),
    (
        "dlq-base64",
        dead_letter("eevee.chat.in.irc.libera.#ops", "not JSON", "echo", b"\xff" * 5000),
    ),
    ("error", ErrorReply(error="invalid", message="body.pid: Field required")),
    ("command.result", CommandResult(ok=False, message="boom")),
    ("command.sync", CommandSync(router="router")),
    ("command.rejected", CommandRejected(name="bad", operator="echo", reason="bad regex")),
    ("command.unregister", CommandUnregistration(operator="crpc", name="ops")),
    ("chat.ctl", ConnectorControl(action="part", room="#ops", reason="bye")),
    ("chat.ctl.result", ConnectorControlResult(ok=True, users=["alice", "eevee"])),
]


def _encode(body: Body, headers: dict[str, str] | None = None) -> bytes:
    return EnvelopeEncoder("irc.libera").encode(body, headers)[1]


# -- (1) no drift ------------------------------------------------------------------------------


def test_checked_in_schemas_match_the_models() -> None:
    problems = schema.drift(SCHEMAS)
    assert problems == [], (
        "schemas/ is out of date with the models; run `make schemas` and commit the result:\n"
        + "\n".join(f"  schemas/{p}" for p in problems)
    )


def test_one_schema_file_per_body_kind() -> None:
    names = {p.name for p in SCHEMAS.glob("*.schema.json")}
    assert names == {"envelope.schema.json"} | {f"{m.KIND}.schema.json" for m in BODY_MODELS}


# -- (2) encoder output validates against the schema files -------------------------------------


def test_samples_cover_every_kind() -> None:
    assert {body.KIND for _, body in SAMPLES} == {m.KIND for m in BODY_MODELS}


@pytest.fixture(scope="module")
def validators() -> dict[str, Any]:
    """Schema file name -> a jsonschema validator of that checked-in file."""
    jsonschema = pytest.importorskip("jsonschema")
    out: dict[str, Any] = {}
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        cls = jsonschema.validators.validator_for(doc, default=jsonschema.Draft202012Validator)
        cls.check_schema(doc)
        out[path.name] = cls(doc, format_checker=cls.FORMAT_CHECKER)
    return out


def _errors(validator: Any, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


@pytest.mark.parametrize("body", [b for _, b in SAMPLES], ids=[i for i, _ in SAMPLES])
def test_encoded_envelope_validates_against_its_schema(
    validators: dict[str, Any], body: Body
) -> None:
    payload = _encode(body, {"trace": "t-1"})
    instance = json.loads(payload)
    assert instance["kind"] == body.KIND
    for name in (f"{body.KIND}.schema.json", "envelope.schema.json"):
        assert _errors(validators[name], instance) == [], f"{name} rejects {payload!r}"


@pytest.mark.parametrize("body", [b for _, b in SAMPLES], ids=[i for i, _ in SAMPLES])
def test_decoder_takes_back_what_the_encoder_wrote(body: Body) -> None:
    env = EnvelopeDecoder(type(body)).decode(_encode(body, {"trace": "t-1"}))
    assert (env.v, env.kind, env.source, env.headers) == (
        1,
        body.KIND,
        "irc.libera",
        {"trace": "t-1"},
    )
    assert env.body == body


@pytest.mark.parametrize("model", BODY_MODELS, ids=[m.KIND for m in BODY_MODELS])
def test_kind_schema_rejects_other_kinds(validators: dict[str, Any], model: type[Body]) -> None:
    validator = validators[f"{model.KIND}.schema.json"]
    for _, body in SAMPLES:
        if body.KIND != model.KIND:
            assert _errors(validator, json.loads(_encode(body))), (
                f"{model.KIND}.schema.json accepts a {body.KIND!r} envelope"
            )


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"v": 2}, "unknown protocol version"),
        ({"timestamp": 1700000000}, "timestamp must be a string"),
        ({"headers": {"trace": 1}}, "header values are strings"),
        ({"id": ""}, "ids are non-empty"),
        ({"body": {"operator": "echo"}}, "pid is required"),
        ({"body": {"operator": "echo", "pid": "1"}}, "pid is an integer"),
    ],
)
def test_ready_schema_rejects_bad_envelopes(
    validators: dict[str, Any], change: dict[str, Any], why: str
) -> None:
    instance = {**json.loads(_encode(Ready(operator="echo", pid=1))), **change}
    assert _errors(validators["ready.schema.json"], instance), why


def test_schemas_allow_unknown_fields(validators: dict[str, Any]) -> None:
    instance = json.loads(_encode(Pong(operator="echo", state="running")))
    instance["future"] = {"x": 1}
    instance["body"]["future"] = [1, 2]
    assert _errors(validators["pong.schema.json"], instance) == []


# -- (3) the protocol document mentions everything ---------------------------------------------


@pytest.fixture(scope="module")
def protocol_doc() -> str:
    assert PROTOCOL_DOC.is_file(), f"{PROTOCOL_DOC} is missing"
    return PROTOCOL_DOC.read_text(encoding="utf-8")


@pytest.mark.parametrize("kind", [m.KIND for m in BODY_MODELS])
def test_protocol_doc_mentions_body_kind(protocol_doc: str, kind: str) -> None:
    assert f"`{kind}`" in protocol_doc, f"docs/protocol.md does not mention body kind `{kind}`"
    assert f"schemas/{kind}.schema.json" in protocol_doc, (
        f"docs/protocol.md does not link schemas/{kind}.schema.json"
    )


@pytest.mark.parametrize("kind", sorted(SUBJECT_KINDS))
def test_protocol_doc_mentions_subject_kind(protocol_doc: str, kind: str) -> None:
    assert f"`{kind}`" in protocol_doc, f"docs/protocol.md does not mention subject kind `{kind}`"


def test_protocol_doc_mentions_every_environment_variable(protocol_doc: str) -> None:
    # The supervisor writes the process contract's names (eeveepy.runtime.contract.ENV_*).
    constants = re.findall(r"\b(ENV_[A-Z_]+)\b", inspect.getsource(Supervisor._env_for))
    names = {getattr(contract, c) for c in constants}
    assert names, "no EEVEE_* names found in Supervisor._env_for"
    missing = sorted(n for n in names if f"`{n}`" not in protocol_doc)
    assert missing == [], f"docs/protocol.md does not document {missing}"
