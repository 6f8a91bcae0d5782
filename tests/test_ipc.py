"""The typed bus API against a real nats-server: publish/subscribe, halt/resume, traces,
declaring subscriptions. Request/reply and bad input have files of their own."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from eeveepy.bus.client import barrier
from eeveepy.bus.ipc import Ipc, Subscription
from eeveepy.errors import (
    OperatorError,
    SubjectError,
)
from eeveepy.protocol.models import (
    ChatMessage,
    Control,
    ControlAction,
    Envelope,
    LogRecord,
    OutgoingMessage,
    Ping,
)

pytest.register_assert_rewrite("tests.ipc_fixtures")  # imported here, before pytest_plugins

from tests.ipc_fixtures import (  # noqa: E402
    SOURCE,
    Bus,
    chat,
    count,
    log_record,
    ready,
    settle,
    until,
)

pytest_plugins = ["tests.ipc_fixtures"]


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
    await pub.publish(subjects.chat_in("xmpp", "srv", "r@conf.host"), chat("c", "r", "xmpp", "srv"))
    await pub.publish(
        subjects.chat_in("irc", "oftc.net", "#a.b.c"), chat("d", "#a", "irc", "oftc.net")
    )
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
