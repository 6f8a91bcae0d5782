"""The typed bus API (publish, subscribe, request, respond) against a real nats-server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sized
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient

from eeveepy.bus.client import BusConfig, barrier, connect
from eeveepy.bus.ipc import Ipc, Subscription
from eeveepy.bus.natsserver import EmbeddedNats
from eeveepy.errors import (
    EnvelopeError,
    NoRespondersError,
    OperatorError,
    PayloadTooLargeError,
    RemoteError,
    RequestTimeoutError,
    SubjectError,
)
from eeveepy.protocol.codec import EnvelopeEncoder
from eeveepy.protocol.models import (
    ChatMessage,
    ChatUser,
    Control,
    ControlAction,
    ControlResult,
    DeadLetter,
    Envelope,
    LogLevel,
    LogRecord,
    OutgoingMessage,
    Ping,
    Pong,
)
from eeveepy.protocol.subjects import Subjects

WAIT = 5.0
SOURCE = "test.x"


def chat(text: str, room: str = "#room") -> ChatMessage:
    return ChatMessage(
        platform="irc",
        network="libera",
        room=room,
        user=ChatUser(id="alice", name="Alice"),
        text=text,
    )


def log_record(n: int) -> LogRecord:
    return LogRecord(operator="test", level=LogLevel.INFO, event=str(n))


class RecordingLogger:
    """Stands in for the structlog logger an Ipc writes to."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def _record(self, level: str, event: str, kw: dict[str, Any]) -> None:
        self.records.append((level, event, kw))

    def debug(self, event: str, **kw: Any) -> None:
        self._record("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._record("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._record("warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._record("error", event, kw)

    def exception(self, event: str, **kw: Any) -> None:
        self._record("exception", event, kw)

    def named(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        """``(level, fields)`` of every record of the event ``name``."""
        return [(level, kw) for level, event, kw in self.records if event == name]

    def problems(self) -> list[str]:
        """Events logged at warning level or above."""
        return [e for lvl, e, _ in self.records if lvl in ("warning", "error", "exception")]


@dataclass
class Bus:
    """Connections and Ipc instances of one test, under a prefix of its own."""

    url: str
    prefix: str = field(default_factory=lambda: "t" + uuid.uuid4().hex)
    conns: list[NatsClient] = field(default_factory=list)
    ipcs: list[Ipc] = field(default_factory=list)

    @property
    def subjects(self) -> Subjects:
        return Subjects(prefix=self.prefix)

    async def connect(self, name: str = "test") -> NatsClient:
        nc = await connect(BusConfig(url=self.url), name=name)
        self.conns.append(nc)
        return nc

    async def attach(self, ipc: Ipc) -> Ipc:
        self.ipcs.append(ipc)
        await ipc.attach(await self.connect(ipc.source))
        return ipc

    async def ipc(self, source: str = SOURCE, **kwargs: Any) -> Ipc:
        return await self.attach(Ipc(self.subjects, source=source, **kwargs))

    async def close(self) -> None:
        for ipc in self.ipcs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ipc.detach(), WAIT)
        for nc in self.conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), WAIT)


@pytest_asyncio.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = Bus(nats_url)
    try:
        yield b
    finally:
        await b.close()


async def ready(*ipcs: Ipc) -> None:
    """The server has every subscription of ``ipcs`` before anyone publishes."""
    for ipc in ipcs:
        await asyncio.wait_for(barrier(ipc.nc), WAIT)


async def settle(*ipcs: Ipc) -> None:
    """Everything published so far on ``ipcs`` has reached its subscribers' handlers."""
    for ipc in ipcs:
        await asyncio.wait_for(barrier(ipc.nc), WAIT)
    await asyncio.sleep(0.05)


async def until(predicate: Callable[[], bool], what: str = "condition") -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT} s waiting for {what}")
        await asyncio.sleep(0.005)


async def count(items: Sized, n: int) -> None:
    await until(lambda: len(items) >= n, f"{n} items (have {len(items)})")


# -- publish / subscribe -------------------------------------------------------------------


async def test_body_handlers_async_and_sync(bus: Bus) -> None:
    sub_ipc = await bus.ipc("test.sub")
    pub = await bus.ipc("test.pub")
    got_async: list[ChatMessage] = []
    got_sync: list[str] = []

    async def on_async(msg: ChatMessage) -> None:
        got_async.append(msg)

    def on_sync(msg: ChatMessage) -> None:
        got_sync.append(msg.text)

    s1 = await sub_ipc.subscribe("chat.x", on_async)
    s2 = await sub_ipc.subscribe("chat.x", on_sync)
    assert isinstance(s1, Subscription)
    assert s1.active
    assert s2.active
    await ready(sub_ipc)

    sent = [chat(f"m{i}") for i in range(5)]
    for body in sent:
        await pub.publish("chat.x", body)
    await count(got_async, 5)
    await count(got_sync, 5)
    assert got_async == sent
    assert got_sync == [b.text for b in sent]
    assert (s1.stats.received, s1.stats.handled, s1.stats.rejected, s1.stats.failed) == (
        5,
        5,
        0,
        0,
    )


async def test_envelope_handler_gets_metadata(bus: Bus) -> None:
    sub_ipc = await bus.ipc("test.sub")
    pub = await bus.ipc("test.pub")
    got: list[Envelope[ChatMessage]] = []
    current: list[Envelope[Any] | None] = []

    async def on_env(env: Envelope[ChatMessage]) -> None:
        current.append(sub_ipc.current())
        got.append(env)

    await sub_ipc.subscribe("chat.y", on_env)
    await ready(sub_ipc)
    assert sub_ipc.current() is None

    headers = {"k": "vé ☃", "reply_to": "01ABC"}
    before = datetime.now(UTC)
    msg_id = await pub.publish("chat.y", chat("hello"), headers=headers)
    await count(got, 1)
    env = got[0]
    assert env.kind == "chat.message"
    assert env.source == "test.pub"
    assert env.id == msg_id
    assert env.headers == headers
    assert env.trace == msg_id
    assert env.body == chat("hello")
    assert env.timestamp.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=2) <= env.timestamp <= datetime.now(UTC)
    assert current == [env]


async def test_any_envelope_handler_receives_every_kind(bus: Bus) -> None:
    sub_ipc = await bus.ipc("test.sub")
    pub = await bus.ipc("test.pub")
    got: list[Envelope[dict[str, Any]]] = []
    bare: list[str] = []

    def on_any(env: Envelope[dict[str, Any]]) -> None:
        got.append(env)

    def on_bare(env: Envelope) -> None:  # type: ignore[type-arg]
        bare.append(env.kind)

    await sub_ipc.subscribe("any.>", on_any)
    await sub_ipc.subscribe("any.>", on_bare)
    await ready(sub_ipc)

    bodies = [chat("x"), Ping(), Control(action=ControlAction.RELOAD, target="echo"), log_record(1)]
    for i, body in enumerate(bodies):
        await pub.publish(f"any.k{i}", body)
    await count(got, 4)
    await count(bare, 4)
    assert [e.kind for e in got] == ["chat.message", "ping", "control", "log"]
    assert bare == [e.kind for e in got]
    assert got[1].body == {}
    assert got[2].body == {"action": "reload", "target": "echo"}
    assert ChatMessage.model_validate(got[0].body) == chat("x")
    assert all(e.source == "test.pub" for e in got)


async def test_relative_and_full_subjects(bus: Bus) -> None:
    sub_ipc = await bus.ipc("test.sub")
    pub = await bus.ipc("test.pub")
    subjects = bus.subjects
    room_subject = subjects.chat_in("irc", "libera", "#foo.bar")
    assert room_subject == f"{bus.prefix}.chat.in.irc.libera.#foo%2Ebar"
    assert sub_ipc.full("chat.in.>") == f"{bus.prefix}.chat.in.>"
    assert sub_ipc.full(room_subject) == room_subject

    got: dict[str, list[str]] = {}

    def collector(name: str) -> Callable[[ChatMessage], None]:
        got[name] = []

        def on_msg(msg: ChatMessage) -> None:
            got[name].append(msg.text)

        return on_msg

    rel = await sub_ipc.subscribe("chat.in.>", collector("rel"))
    full = await sub_ipc.subscribe(f"{bus.prefix}.chat.in.>", collector("full"))
    assert rel.pattern == full.pattern == f"{bus.prefix}.chat.in.>"
    await sub_ipc.subscribe("chat.in.irc.>", collector("irc"))
    await sub_ipc.subscribe("chat.in.irc.*.*", collector("tokens"))
    await sub_ipc.subscribe(room_subject, collector("exact"))
    await ready(sub_ipc)

    await pub.publish(room_subject, chat("a", room="#foo.bar"))  # full subject
    await pub.publish("chat.in.irc.libera.#foo%2Ebar", chat("b"))  # relative, same subject
    await pub.publish(subjects.chat_in("xmpp", "srv", "r@conf.host"), chat("c"))
    await pub.publish(subjects.chat_in("irc", "oftc.net", "#a.b.c"), chat("d"))
    await count(got["rel"], 4)
    await settle(pub, sub_ipc)
    assert got["rel"] == got["full"] == ["a", "b", "c", "d"]
    assert got["irc"] == got["tokens"] == ["a", "b", "d"]
    assert got["exact"] == ["a", "b"]


async def test_queue_group_delivers_each_message_once(bus: Bus) -> None:
    workers = [await bus.ipc(f"test.w{i}") for i in range(2)]
    observer = await bus.ipc("test.observer")
    pub = await bus.ipc("test.pub")
    got: list[list[int]] = [[], []]
    seen: list[int] = []

    def worker(i: int) -> Callable[[LogRecord], None]:
        def on_log(msg: LogRecord) -> None:
            got[i].append(int(msg.event))

        return on_log

    def on_observe(msg: LogRecord) -> None:
        seen.append(int(msg.event))

    subs = [await w.subscribe("work", worker(i), queue="workers") for i, w in enumerate(workers)]
    await observer.subscribe("work", on_observe)  # not in the group: gets everything
    await ready(*workers, observer)

    for n in range(200):
        await pub.publish("work", log_record(n))
    await until(lambda: len(got[0]) + len(got[1]) >= 200, "200 deliveries")
    await count(seen, 200)
    await settle(pub, *workers)

    assert sorted(got[0] + got[1]) == list(range(200))
    assert got[0], "both workers should get a share"
    assert got[1], "both workers should get a share"
    assert got[0] == sorted(got[0])
    assert got[1] == sorted(got[1])
    assert seen == list(range(200))
    assert sum(s.stats.handled for s in subs) == 200


# -- request / reply -----------------------------------------------------------------------


async def test_request_answered_by_the_returned_body(bus: Bus) -> None:
    responder = await bus.ipc("test.responder")
    client = await bus.ipc("test.client")

    def on_ping(msg: Ping) -> Pong:
        return Pong(operator="test.responder", state="running")

    await responder.subscribe("operator.ping.test.responder", on_ping)
    await ready(responder)

    reply = await client.request("operator.ping.test.responder", Ping(), Pong, timeout=WAIT)
    assert reply.body == Pong(operator="test.responder", state="running")
    assert reply.source == "test.responder"
    assert reply.kind == "pong"


async def test_respond_inside_a_handler(bus: Bus) -> None:
    responder = await bus.ipc("test.responder")
    client = await bus.ipc("test.client")
    answered: list[bool] = []

    async def on_ctl(env: Envelope[Control]) -> None:
        answered.append(
            await responder.respond(ControlResult(ok=True, message=f"did {env.body.action}"))
        )

    await responder.subscribe("operator.ctl.x", on_ctl)
    await ready(responder)
    assert await responder.respond(Pong(operator="x", state="running")) is False  # no handler

    reply = await client.request(
        "operator.ctl.x", Control(action=ControlAction.HALT), ControlResult, timeout=WAIT
    )
    assert reply.body.ok
    assert reply.body.message == "did halt"

    # A plain publish is not a request: respond() says so.
    await client.publish("operator.ctl.x", Control(action=ControlAction.RESUME))
    await count(answered, 2)
    assert answered == [True, False]


async def test_raising_handler_answers_with_an_error(bus: Bus) -> None:
    log = RecordingLogger()
    responder = await bus.ipc("test.responder", logger=log)
    client = await bus.ipc("test.client")

    def on_ping(msg: Ping) -> Pong:
        raise ValueError("boom at the responder")

    sub = await responder.subscribe("svc", on_ping)
    await ready(responder)

    with pytest.raises(RemoteError) as info:
        await client.request("svc", Ping(), Pong, timeout=WAIT)
    assert info.value.code == "ValueError"
    assert "boom at the responder" in str(info.value)
    assert "test.responder" in str(info.value)
    assert sub.stats.failed == 1
    assert sub.stats.handled == 0
    assert log.problems() == ["handler failed"]
    assert log.named("handler failed")[0][0] in ("error", "exception")


async def test_request_with_an_invalid_body_gets_an_error_reply(bus: Bus) -> None:
    responder = await bus.ipc("test.responder")
    client = await bus.ipc("test.client")
    handled: list[ChatMessage] = []

    def on_chat(msg: ChatMessage) -> Pong:
        handled.append(msg)
        return Pong(operator="x", state="running")

    sub = await responder.subscribe("svc", on_chat)
    await ready(responder)
    with pytest.raises(RemoteError) as info:
        await client.request("svc", Ping(), Pong, timeout=WAIT)
    assert info.value.code == "invalid"
    assert handled == []
    assert sub.stats.rejected == 1


async def test_reply_of_the_wrong_kind_raises(bus: Bus) -> None:
    responder = await bus.ipc("test.responder")
    client = await bus.ipc("test.client")

    def on_ping(msg: Ping) -> Pong:
        return Pong(operator="x", state="running")

    await responder.subscribe("svc", on_ping)
    await ready(responder)
    with pytest.raises(EnvelopeError, match="unexpected kind 'pong'"):
        await client.request("svc", Ping(), ControlResult, timeout=WAIT)


async def test_request_to_nobody(bus: Bus) -> None:
    client = await bus.ipc("test.client")
    started = time.monotonic()
    with pytest.raises(NoRespondersError, match=f"{bus.prefix}.nobody.home"):
        await client.request("nobody.home", Ping(), Pong, timeout=WAIT)
    assert time.monotonic() - started < WAIT


async def test_request_without_an_answer_times_out(bus: Bus) -> None:
    responder = await bus.ipc("test.responder")
    client = await bus.ipc("test.client")
    seen: list[Ping] = []

    def on_ping(msg: Ping) -> None:
        seen.append(msg)  # returns None: no answer

    await responder.subscribe("svc", on_ping)
    await ready(responder)
    started = time.monotonic()
    with pytest.raises(RequestTimeoutError):
        await client.request("svc", Ping(), Pong, timeout=0.3)
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 2.0
    assert len(seen) == 1


# -- bad input -----------------------------------------------------------------------------

_ENCODER = EnvelopeEncoder("test.rogue")


def _unknown_kind() -> bytes:
    _, payload = _ENCODER.encode(chat("fits the model"))
    return payload.replace(b'"kind":"chat.message"', b'"kind":"made.up"', 1)


BAD_INPUTS = [
    pytest.param(b"\xff\xfe not json", "Invalid JSON", "base64", False, id="malformed-bytes"),
    pytest.param(b'{"hello": "world"}', "kind: Field required", "utf-8", False, id="wrong-shape"),
    pytest.param(_unknown_kind(), "unexpected kind 'made.up'", "utf-8", False, id="unknown-kind"),
    pytest.param(
        _ENCODER.encode(Ping())[1], "unexpected kind 'ping'", "utf-8", False, id="other-kind"
    ),
    pytest.param(b"x" * 100_000, "over the limit of 4096", "utf-8", True, id="oversize"),
]


@pytest.mark.parametrize(("payload", "reason", "encoding", "truncated"), BAD_INPUTS)
async def test_bad_input_goes_to_the_dlq(
    bus: Bus, payload: bytes, reason: str, encoding: str, truncated: bool
) -> None:
    log = RecordingLogger()
    receiver = await bus.ipc("test.receiver", max_inbound=4096, logger=log)
    dlq = await bus.ipc("test.dlq")
    pub = await bus.ipc("test.pub")
    handled: list[str] = []
    letters: list[Envelope[DeadLetter]] = []

    def on_chat(msg: ChatMessage) -> None:
        handled.append(msg.text)

    def on_dead(env: Envelope[DeadLetter]) -> None:
        letters.append(env)

    sub = await receiver.subscribe("in.x", on_chat)
    await dlq.subscribe("dlq.>", on_dead)
    await ready(receiver, dlq)

    subject = f"{bus.prefix}.in.x"
    await pub.nc.publish(subject, payload)
    await pub.publish("in.x", chat("still alive"))
    await count(handled, 1)
    await count(letters, 1)
    await settle(pub, receiver, dlq)

    assert handled == ["still alive"]
    assert len(letters) == 1
    env = letters[0]
    assert env.source == "test.receiver"
    letter = env.body
    assert letter.subject == subject
    assert reason in letter.reason
    assert letter.receiver == "test.receiver"
    assert letter.size == len(payload)
    assert letter.encoding == encoding
    assert letter.truncated is truncated
    raw = base64.b64decode(letter.payload) if encoding == "base64" else letter.payload.encode()
    assert raw == payload[:4096]

    stats = sub.stats
    assert (stats.received, stats.rejected, stats.handled, stats.failed) == (2, 1, 1, 0)
    assert receiver.rejected == 1
    assert log.problems() == ["envelope rejected"]
    ((level, fields),) = log.named("envelope rejected")
    assert level == "warning"
    assert fields["subject"] == subject
    assert reason in fields["reason"]


async def test_dlq_can_be_disabled(bus: Bus) -> None:
    receiver = await bus.ipc("test.receiver", dlq=False)
    dlq = await bus.ipc("test.dlq")
    pub = await bus.ipc("test.pub")
    letters: list[Envelope[dict[str, Any]]] = []

    def on_chat(msg: ChatMessage) -> None:
        pass

    def on_dead(env: Envelope[dict[str, Any]]) -> None:
        letters.append(env)

    sub = await receiver.subscribe("in.x", on_chat)
    await dlq.subscribe("dlq.>", on_dead)
    await ready(receiver, dlq)
    await pub.publish_raw("in.x", b"nope")
    await until(lambda: sub.stats.rejected == 1, "the rejection")
    await settle(pub, receiver, dlq)
    assert letters == []


async def test_a_failing_handler_does_not_stop_the_subscription(bus: Bus) -> None:
    log = RecordingLogger()
    receiver = await bus.ipc("test.receiver", logger=log)
    pub = await bus.ipc("test.pub")
    handled: list[str] = []

    async def on_chat(msg: ChatMessage) -> None:
        if msg.text == "boom":
            raise RuntimeError("handler bug")
        handled.append(msg.text)

    sub = await receiver.subscribe("in.x", on_chat)
    await ready(receiver)
    bad_id = await pub.publish("in.x", chat("boom"))
    await pub.publish("in.x", chat("next"))
    await count(handled, 1)
    assert handled == ["next"]
    stats = sub.stats
    assert (stats.received, stats.handled, stats.failed, stats.rejected) == (2, 1, 1, 0)
    assert log.problems() == ["handler failed"]
    ((level, kw),) = log.named("handler failed")
    assert level in ("error", "exception")
    assert kw["envelope_id"] == bad_id
    assert kw["subject"] == f"{bus.prefix}.in.x"
    assert "handler bug" in kw["error"]


# -- limits --------------------------------------------------------------------------------


async def test_publish_over_max_payload_is_refused(tmp_path: Path) -> None:
    server = EmbeddedNats(store_dir=tmp_path, max_payload=4096, jetstream=False)
    await server.start()
    small = Bus(server.url)
    try:
        receiver = await small.ipc("test.receiver")
        pub = await small.ipc("test.pub")
        assert pub.nc.max_payload == 4096
        got: list[str] = []

        def on_chat(msg: ChatMessage) -> None:
            got.append(msg.text)

        await receiver.subscribe("big", on_chat)
        await ready(receiver)

        with pytest.raises(PayloadTooLargeError) as info:
            await pub.publish("big", chat("x" * 5000))
        assert info.value.limit == 4096
        assert info.value.size > 5000
        assert info.value.subject == f"{small.prefix}.big"
        with pytest.raises(PayloadTooLargeError):
            await pub.publish_raw("big", b"y" * 4097)
        with pytest.raises(PayloadTooLargeError):
            await pub.request("big", chat("z" * 5000), Pong, timeout=WAIT)

        await pub.publish("big", chat("small"))
        await count(got, 1)
        await settle(pub, receiver)
        assert got == ["small"]
        assert pub.nc.is_connected  # nothing oversize reached the server
    finally:
        await small.close()
        await server.stop()


# -- halt / resume -------------------------------------------------------------------------


async def test_halt_holds_gated_handlers_until_resume(bus: Bus) -> None:
    receiver = await bus.ipc("test.receiver")
    pub = await bus.ipc("test.pub")
    gated: list[int] = []
    ungated: list[int] = []

    def on_gated(msg: LogRecord) -> None:
        gated.append(int(msg.event))

    def on_ungated(msg: LogRecord) -> None:
        ungated.append(int(msg.event))

    await receiver.subscribe("h", on_gated)
    free = receiver.subscribe("h", on_ungated)
    free.gated = False
    await free
    await ready(receiver)

    receiver.halt()
    assert receiver.halted
    for n in range(10):
        await pub.publish("h", log_record(n))
    await count(ungated, 10)
    await settle(pub, receiver)
    assert gated == []
    assert ungated == list(range(10))

    receiver.resume()
    assert not receiver.halted
    await count(gated, 10)
    assert gated == list(range(10))

    await pub.publish("h", log_record(10))
    await count(gated, 11)
    assert gated == list(range(11))


# -- trace propagation ---------------------------------------------------------------------


async def test_trace_is_carried_over_by_handlers(bus: Bus) -> None:
    relay = await bus.ipc("test.relay")
    observer = await bus.ipc("test.observer")
    pub = await bus.ipc("test.pub")
    seen: list[Envelope[OutgoingMessage]] = []

    async def on_chat(msg: ChatMessage) -> None:
        await relay.publish(
            "chat.out.irc.libera",
            OutgoingMessage(platform="irc", network="libera", target=msg.room, text=msg.text),
        )

    def on_out(env: Envelope[OutgoingMessage]) -> None:
        seen.append(env)

    await relay.subscribe("chat.in.>", on_chat)
    await observer.subscribe("chat.out.>", on_out)
    await ready(relay, observer)

    await pub.publish("chat.in.irc.libera.x", chat("one"), headers={"trace": "abc"})
    second = await pub.publish("chat.in.irc.libera.x", chat("two"))
    await pub.publish("chat.in.irc.libera.x", chat("three"), trace="xyz")
    await count(seen, 3)
    assert [e.body.text for e in seen] == ["one", "two", "three"]
    assert seen[0].headers["trace"] == "abc"
    assert seen[0].trace == "abc"
    assert seen[1].trace == second  # no trace header: the original message's id
    assert seen[2].trace == "xyz"
    assert all(e.source == "test.relay" for e in seen)

    # Outside a handler nothing is added.
    await relay.publish(
        "chat.out.irc.libera", OutgoingMessage(platform="irc", network="l", target="t", text="4")
    )
    await count(seen, 4)
    assert seen[3].headers == {}


# -- declaring subscriptions ---------------------------------------------------------------


async def test_decorator_subscribes_on_attach(bus: Bus) -> None:
    ipc = Ipc(bus.subjects, source=SOURCE)
    got: list[Ping] = []

    @ipc.subscribe("x.y")
    async def on_ping(msg: Ping) -> None:
        got.append(msg)

    assert callable(on_ping)
    assert not ipc.connected
    with pytest.raises(OperatorError):
        ipc.nc  # noqa: B018
    await bus.attach(ipc)
    assert ipc.connected
    pub = await bus.ipc("test.pub")
    await ready(ipc)
    await pub.publish("x.y", Ping())
    await count(got, 1)

    def late(msg: Ping) -> None:
        pass

    with pytest.raises(OperatorError, match="already connected"):
        ipc.subscribe("x.z")(late)


async def test_handlers_must_be_annotated(bus: Bus) -> None:
    ipc = Ipc(bus.subjects, source=SOURCE)

    def no_params() -> None:
        pass

    def wrong(msg: int) -> None:
        pass

    with pytest.raises(OperatorError, match="annotate"):
        ipc.subscribe("x.y", lambda msg: None)
    with pytest.raises(OperatorError, match="annotate"):
        ipc.subscribe("x.y")(lambda msg: None)
    with pytest.raises(OperatorError):
        ipc.subscribe("x.y", cast(Any, no_params))
    with pytest.raises(OperatorError):
        ipc.subscribe("x.y", wrong)

    def fine(msg: Ping) -> None:
        pass

    for bad in ("x..y", "x.>.y", "x.a*", "x y", ""):
        with pytest.raises(SubjectError):
            ipc.subscribe(bad, fine)

    # Nothing refused was kept: attaching subscribes nothing.
    await bus.attach(ipc)
    assert ipc._subs == []


async def test_subscription_context_manager_unsubscribes(bus: Bus) -> None:
    receiver = await bus.ipc("test.receiver")
    pub = await bus.ipc("test.pub")
    got: list[str] = []

    def on_chat(msg: ChatMessage) -> None:
        got.append(msg.text)

    async with receiver.subscribe("cm", on_chat) as sub:
        assert sub.active
        await ready(receiver)
        await pub.publish("cm", chat("inside"))
        await count(got, 1)
    assert not sub.active

    await ready(receiver)
    await pub.publish("cm", chat("after"))
    await settle(pub, receiver)
    assert got == ["inside"]
    assert sub.stats.received == 1


async def test_detach_stops_delivery(bus: Bus) -> None:
    receiver = await bus.ipc("test.receiver")
    pub = await bus.ipc("test.pub")
    got: list[str] = []

    def on_chat(msg: ChatMessage) -> None:
        got.append(msg.text)

    sub = await receiver.subscribe("d", on_chat)
    await ready(receiver)
    await pub.publish("d", chat("one"))
    await count(got, 1)

    nc = receiver.nc
    await receiver.detach()
    assert not receiver.connected
    assert not sub.active
    await barrier(nc)
    await pub.publish("d", chat("two"))
    await settle(pub)
    assert got == ["one"]
    with pytest.raises(OperatorError):
        await receiver.publish("d", chat("three"))
