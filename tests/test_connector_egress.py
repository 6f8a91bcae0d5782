"""The connector kit's pure parts: egress pump, flood control, state, control requests.

No bus and no platform: the pump sends to a list, the clock is the event loop's.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import structlog

from eeveepy.connector import (
    ConnectionState,
    ControlRequest,
    EgressLimits,
    Expect,
    FairQueue,
    Outbound,
    Room,
    RoomAction,
    TokenBucket,
)
from eeveepy.connector.control import check_actions
from eeveepy.connector.egress import Egress
from eeveepy.connector.link import Rooms
from eeveepy.connector.platform import ReconnectPolicy, session_changes
from eeveepy.connector.state import StateTracker
from eeveepy.errors import ConnectorError, RefusedError, SessionError
from eeveepy.protocol.models import ChatEventType, ConnectorControl
from tests.connector_fake import FakeSettings

LOG = structlog.get_logger("test.egress")


class Sink:
    """What the pump sends to: records items, fails or refuses on demand."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.fail = 0
        self.refuse: set[str] = set()

    async def __call__(self, item: Outbound) -> None:
        if item.text in self.refuse:
            raise RefusedError("never")
        if self.fail > 0:
            self.fail -= 1
            raise SessionError("write failed")
        self.sent.append((item.target, item.text))


def pump(sink: Sink, limits: EgressLimits | None = None, *, up: bool = True) -> Egress:
    ready = asyncio.Event()
    if up:
        ready.set()
    return Egress(sink, ready, LOG, limits=limits, fold=str.lower)


async def test_targets_are_served_round_robin_in_order() -> None:
    sink = Sink()
    egress = pump(sink, up=False)
    done = [
        egress.put_message([Outbound("#busy", f"b{i}") for i in range(4)]),
        egress.put_message([Outbound("#quiet", "q0"), Outbound("#QUIET", "q1")]),
        egress.put_message([Outbound("bob", "p0")]),
    ]
    egress.start()
    await asyncio.sleep(0.05)
    assert sink.sent == [], "nothing leaves while the session is down"
    egress._ready.set()
    await asyncio.wait_for(asyncio.gather(*done), 2)
    await egress.stop()
    assert [t for t, _ in sink.sent[:3]] == ["#busy", "#quiet", "bob"]
    assert [x for t, x in sink.sent if t == "#busy"] == ["b0", "b1", "b2", "b3"]
    assert [x for t, x in sink.sent if t.lower() == "#quiet"] == ["q0", "q1"]


async def test_a_message_is_done_once_its_last_item_is_sent() -> None:
    sink = Sink()
    egress = pump(sink, EgressLimits(rate=1, period=0.2, burst=1))
    done = egress.put_message([Outbound("#a", "one"), Outbound("#a", "two")])
    egress.start()
    await asyncio.wait_for(asyncio.shield(done), 2)
    assert sink.sent == [("#a", "one"), ("#a", "two")]
    assert egress.put_message([]).done(), "an empty message is done at once"
    await egress.stop()


async def test_the_bucket_paces_sends() -> None:
    sink = Sink()
    egress = pump(sink, EgressLimits(rate=1, period=0.1, burst=2))
    start = time.monotonic()
    done = egress.put_message([Outbound("#a", str(i)) for i in range(5)])
    egress.start()
    await asyncio.wait_for(done, 3)
    elapsed = time.monotonic() - start
    await egress.stop()
    assert len(sink.sent) == 5
    assert elapsed >= 0.28, elapsed  # a burst of 2, then 3 more at 0.1 s each


async def test_the_cap_drops_the_oldest_and_settles_its_message() -> None:
    sink = Sink()
    egress = pump(sink, EgressLimits(cap=3), up=False)
    first = egress.put_message([Outbound("#a", "old")])
    rest = [egress.put_message([Outbound("#a", f"n{i}")]) for i in range(3)]
    assert first.done(), "dropped: its message counts as handled"
    assert not any(f.done() for f in rest)
    assert len(egress) == 3
    egress.retune(EgressLimits(cap=1))
    assert len(egress) == 1
    assert rest[0].done()
    assert rest[1].done()
    egress._ready.set()
    egress.start()
    await asyncio.wait_for(rest[2], 2)
    await egress.stop()
    assert sink.sent == [("#a", "n2")]
    with pytest.raises(ConnectorError):
        egress.retune(EgressLimits(cap=0))


async def test_a_failed_send_is_put_back_and_a_refused_one_dropped() -> None:
    sink = Sink()
    sink.fail = 3
    sink.refuse = {"bad"}
    egress = pump(sink)
    done = egress.put_message([Outbound("#a", "x"), Outbound("#a", "bad"), Outbound("#a", "y")])
    other = egress.put_message([Outbound("#b", "z")])
    egress.start()
    await asyncio.wait_for(asyncio.gather(done, other), 3)
    await egress.stop()
    assert [x for t, x in sink.sent if t == "#a"] == ["x", "y"]
    assert ("#b", "z") in sink.sent
    assert sink.fail == 0


async def test_clear_settles_everything() -> None:
    egress = pump(Sink(), up=False)
    done = [egress.put_message([Outbound("#a", "1"), Outbound("#b", "2")]) for _ in range(3)]
    egress.clear()
    assert len(egress) == 0
    assert all(d.done() for d in done)


def test_token_bucket_and_fair_queue() -> None:
    now = [0.0]
    bucket = TokenBucket(2, 1.0, 2, clock=lambda: now[0])
    assert bucket.try_take()
    assert bucket.try_take()
    assert not bucket.try_take()
    assert bucket.delay() == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.try_take()
    assert TokenBucket(0, 1.0, 1).delay() == 0.0
    with pytest.raises(ConnectorError):
        TokenBucket(-1, 1.0, 1)
    queue: FairQueue[int] = FairQueue(str.lower)
    for i, target in enumerate(["#a", "#A", "#b"]):
        queue.put(target, i)
    assert queue.get() == ("#a", 0)
    queue.put_front("#a", 0)
    assert queue.targets == ["#a", "#b"]
    assert queue.drop_oldest() == ("#a", 0)


def test_state_changes_are_told_once() -> None:
    tracker = StateTracker()
    told = [
        tracker.change(state)
        for state in [
            ConnectionState.CONNECTING,
            ConnectionState.DISCONNECTED,  # never connected: nothing to tell
            ConnectionState.CONNECTING,
            ConnectionState.CONNECTED,
            ConnectionState.CONNECTED,  # twice: told once
            ConnectionState.DISCONNECTED,
            ConnectionState.DISCONNECTED,
            ConnectionState.CONNECTING,
            ConnectionState.AUTH_FAILED,  # refused credentials: told on every attempt
            ConnectionState.CONNECTING,
            ConnectionState.AUTH_FAILED,
            ConnectionState.AUTH_FAILED,
        ]
    ]
    c, d = ChatEventType.CONNECTED, ChatEventType.DISCONNECTED
    assert told == [None, None, None, c, None, d, None, None, d, None, d, None]
    assert not tracker.up.is_set()
    assert tracker.connected_for() == 0.0


def test_uptime_outlives_the_session_until_the_next_one() -> None:
    now = [0.0]
    tracker = StateTracker(clock=lambda: now[0])
    tracker.change(ConnectionState.CONNECTING)
    now[0] = 1.0
    tracker.change(ConnectionState.CONNECTED)
    now[0] = 4.0
    assert tracker.uptime() == 3.0
    tracker.change(ConnectionState.DISCONNECTED)  # the platform said so before it returned
    now[0] = 9.0
    assert tracker.connected_for() == 0.0
    assert tracker.uptime() == 3.0, "what the runner's backoff reset looks at"
    tracker.change(ConnectionState.CONNECTING)
    assert tracker.uptime() == 0.0


def test_wire_requests_in_the_kits_words() -> None:
    join = ControlRequest.from_wire(ConnectorControl(action="join", room="#a", key="k"), "irc")
    assert (join.action, join.room_action, join.key, join.label) == (
        "room.join",
        RoomAction.JOIN,
        "k",
        "join",
    )
    names = ControlRequest.from_wire(ConnectorControl(action="names", room="#a"), "irc")
    assert names.room_action is RoomAction.USERS
    nick = ControlRequest.from_wire(ConnectorControl(action="nick", nick="eve"), "irc")
    assert (nick.action, nick.name, nick.room_action) == ("irc.nick", "eve", None)
    assert nick.refuse("taken").message == "nick: taken"
    assert check_actions("irc", ["room.join", "irc.nick"]) == {"room.join", "irc.nick"}
    for bad in ("nick", "xmpp.nick", "irc.", "irc.a.b"):
        with pytest.raises(ConnectorError):
            check_actions("irc", [bad])


async def test_expect_matches_and_fails() -> None:
    expect: Expect[str] = Expect()
    words: list[str] = []

    def collect(line: str) -> bool | None:
        words.append(line)
        return True if line == "end" else None

    done = expect.expect(collect)
    boom = expect.expect(lambda line: int(line) if line == "x" else None)
    lost = expect.expect(lambda line: None)
    for line in ("a", "b", "end", "x"):
        expect.feed(line)
    assert await done is True
    assert words == ["a", "b", "end"]
    with pytest.raises(ValueError, match="invalid literal"):
        await boom
    expect.fail(SessionError("disconnected"))
    with pytest.raises(SessionError):
        await lost
    assert len(expect) == 0


def test_rooms_and_reload_diffs() -> None:
    rooms = Rooms(str.lower)
    rooms.reset([Room("#A"), Room("#b", "key")])
    assert "#a" in rooms
    assert len(rooms) == 2
    added, removed = rooms.diff([Room("#a"), Room("#b"), Room("#c")])
    assert added == [Room("#b"), Room("#c")]
    assert removed == []
    assert rooms.diff([Room("#a")])[1] == [Room("#b", "key")]
    assert rooms.drop("#B") == Room("#b", "key")
    assert list(rooms) == [Room("#A")]
    old = FakeSettings()
    assert session_changes(old, old.model_copy(update={"rooms": ["#x"]}), frozenset({"nick"})) == (
        set()
    )
    new = old.model_copy(update={"nick": "Other", "egress_lines": 3})
    assert session_changes(old, new, frozenset({"nick", "server"})) == {"nick"}
    assert ReconnectPolicy(0.5, 4).healthy == 5.0
    with pytest.raises(ConnectorError):
        ReconnectPolicy(2, 1)


async def test_a_confirmed_send_settles_its_message_only_when_confirmed() -> None:
    confirmations: list[asyncio.Future[None]] = []
    sent: list[str] = []

    async def send(item: Outbound) -> asyncio.Future[None]:
        sent.append(item.text)
        confirmations.append(asyncio.get_running_loop().create_future())
        return confirmations[-1]

    ready = asyncio.Event()
    ready.set()
    egress = Egress(send, ready, LOG)
    egress.start()
    try:
        first = egress.put_message([Outbound("#a", "1"), Outbound("#a", "2")])
        second = egress.put_message([Outbound("#a", "3")])
        for _ in range(100):  # all three go out without waiting for confirmations
            if len(sent) == 3:
                break
            await asyncio.sleep(0.01)
        assert sent == ["1", "2", "3"]
        assert not first.done()
        confirmations[1].set_result(None)  # the last item of the first message
        await asyncio.wait_for(first, 1)
        assert not second.done()
        confirmations[2].cancel()  # stopping: never counts as sent
        await asyncio.sleep(0.05)
        assert not second.done()
    finally:
        await egress.stop()


async def test_items_are_sent_at_once_while_nothing_waits_and_never_ahead_of_the_queue() -> None:
    """``send_now`` (a platform that can write without waiting) sends an item in the call
    that queued it while nothing is queued and flood control allows; otherwise the pump
    sends it, in order, and nothing overtakes what waits."""
    sink = Sink()
    now: list[tuple[str, str]] = []
    refuse_now = {"later"}

    def send_now(item: Outbound) -> bool:
        if item.text in refuse_now:
            return False
        now.append((item.target, item.text))
        return True

    ready = asyncio.Event()
    egress = Egress(
        sink, ready, LOG, limits=EgressLimits(rate=2, period=0.2, burst=2), send_now=send_now
    )
    egress.start()
    down = egress.put_message([Outbound("#a", "down")])
    assert now == [], "nothing leaves while the session is down"
    assert not down.done()
    ready.set()
    await asyncio.wait_for(down, 2)
    assert sink.sent == [("#a", "down")]
    await asyncio.sleep(0.25)  # the bucket full again: two tokens
    sent: list[str] = []
    first = egress.put_message([Outbound("#a", "1")], on_sent=lambda: sent.append("1"))
    assert now == [("#a", "1")], "sent in the call"
    assert first.done()
    assert sent == ["1"]
    pair = egress.put_message([Outbound("#a", "2"), Outbound("#a", "3")])
    assert now[-1] == ("#a", "2")
    assert not pair.done(), "3 waits for a token"
    behind = egress.put_message([Outbound("#b", "4")])
    assert now[-1] == ("#a", "2"), "4 does not overtake 3"
    await asyncio.wait_for(asyncio.gather(pair, behind), 2)
    assert sink.sent[1:] == [("#a", "3"), ("#b", "4")]
    await asyncio.sleep(0.25)
    later = egress.put_message([Outbound("#a", "later")])
    assert not later.done(), "a platform that cannot send it now leaves it to the pump"
    await asyncio.wait_for(later, 2)
    assert sink.sent[-1] == ("#a", "later")
    await egress.stop()
