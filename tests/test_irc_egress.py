"""The IRC connector's egress (the kit's pump with IRC lines and case mapping): fair order,
put-back on failure, a cap, waiting to be ready."""

from __future__ import annotations

import asyncio

import structlog

from eeveepy.connector import EgressLimits, Outbound
from eeveepy.connector.egress import Egress
from eeveepy.errors import IrcConnectionError
from operators.irc.text import irc_lower


class Server:
    """Takes lines, or refuses the next ``fail`` of them (as a closed connection would)."""

    def __init__(self) -> None:
        self.lines: list[Outbound] = []
        self.fail = 0

    async def send(self, line: Outbound) -> None:
        if self.fail:
            self.fail -= 1
            raise IrcConnectionError("not connected")
        self.lines.append(line)


def egress(
    server: Server, ready: asyncio.Event, limit: int = 100, limits: EgressLimits | None = None
) -> Egress:
    limits = limits or EgressLimits(cap=limit)
    return Egress(server.send, ready, structlog.get_logger(), limits=limits, fold=irc_lower)


def line(target: str, text: str) -> Outbound:
    return Outbound(target, text, kind="PRIVMSG")


async def test_round_robin_per_target_order_and_done_after_the_last_line() -> None:
    server, ready = Server(), asyncio.Event()
    pump = egress(server, ready)
    busy = pump.put_message([line("#busy", f"b{n}") for n in range(4)])
    quiet = pump.put_message([line("#quiet", "q0")])
    other = pump.put_message([line("#BUSY", "b4")])  # the same target by the server's case mapping
    pump.start()
    try:
        await asyncio.sleep(0.05)
        assert server.lines == []  # not registered yet: nothing goes out
        assert not busy.done()
        ready.set()
        await asyncio.wait_for(asyncio.gather(busy, quiet, other), 2)
        texts = [ln.text for ln in server.lines]
        assert texts[:2] == ["b0", "q0"]  # the quiet channel is not starved
        assert [t for t in texts if t.startswith("b")] == ["b0", "b1", "b2", "b3", "b4"]
        assert len(pump) == 0
    finally:
        await pump.stop()


async def test_a_line_that_could_not_be_written_is_tried_again_first() -> None:
    server, ready = Server(), asyncio.Event()
    ready.set()
    pump = egress(server, ready)
    server.fail = 2
    done = pump.put_message([line("#a", "one"), line("#a", "two")])
    pump.start()
    try:
        await asyncio.wait_for(done, 2)
        assert [ln.text for ln in server.lines] == ["one", "two"]
    finally:
        await pump.stop()


async def test_the_cap_drops_the_oldest_line_of_the_longest_queue() -> None:
    server, ready = Server(), asyncio.Event()
    pump = egress(server, ready, limit=3)
    first = pump.put_message([line("#a", "a0")])
    pump.put_message([line("#a", "a1"), line("#b", "b0")])
    last = pump.put_message([line("#b", "b1")])
    assert len(pump) == 3
    assert first.done()  # dropped: its sender is not left waiting forever
    assert not last.done()
    ready.set()
    pump.start()
    try:
        await asyncio.wait_for(last, 2)
        assert [ln.text for ln in server.lines] == ["a1", "b0", "b1"]
    finally:
        await pump.stop()


async def test_the_bucket_paces_lines_and_an_empty_message_is_done_at_once() -> None:
    server, ready = Server(), asyncio.Event()
    ready.set()
    pump = egress(server, ready, limits=EgressLimits(20, 1.0, 2))  # 2, then one every 50 ms
    assert pump.put_message([]).done()
    done = pump.put_message([line("#a", str(n)) for n in range(5)])
    pump.start()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.wait_for(done, 2)
        assert loop.time() - start >= 0.14  # 3 lines after the burst, 50 ms apart
        assert [ln.text for ln in server.lines] == ["0", "1", "2", "3", "4"]
    finally:
        await pump.stop()
