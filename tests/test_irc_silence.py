"""The IRC connection's bound on the wait for a line (one timer for the whole connection)."""

from __future__ import annotations

import asyncio
import time

import pytest

from operators.irc.connection import Silence


async def test_a_wait_past_the_bound_times_out_and_loses_no_line() -> None:
    reader = asyncio.StreamReader()
    silence = Silence()
    reader.feed_data(b"one\r\n")
    assert await silence.bound(reader.readline(), 0.2) == b"one\r\n"
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        await silence.bound(reader.readline(), 0.2)
    assert 0.15 <= time.monotonic() - start < 2.0
    reader.feed_data(b"two\r\n")  # what comes after a timeout is read by the next wait
    assert await silence.bound(reader.readline(), 0.2) == b"two\r\n"
    silence.stop()


async def test_lines_move_the_bound_on() -> None:
    reader = asyncio.StreamReader()
    silence = Silence()

    async def feed() -> None:
        for n in range(6):
            await asyncio.sleep(0.06)
            reader.feed_data(b"%d\r\n" % n)

    feeder = asyncio.ensure_future(feed())
    # Each line comes within its own bound, though all of them take longer than one.
    got = [await silence.bound(reader.readline(), 0.15) for _ in range(6)]
    await feeder
    assert len(got) == 6
    silence.stop()


async def test_a_shorter_bound_after_a_longer_one_holds() -> None:
    reader = asyncio.StreamReader()
    silence = Silence()
    reader.feed_data(b"x\r\n")
    await silence.bound(reader.readline(), 30.0)  # the timer is set 30 s ahead
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        await silence.bound(reader.readline(), 0.1)
    assert time.monotonic() - start < 2.0
    silence.stop()


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    reader = asyncio.StreamReader()
    silence = Silence()

    async def read() -> bytes:
        return await silence.bound(reader.readline(), 5.0)

    task = asyncio.ensure_future(read())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    silence.stop()
