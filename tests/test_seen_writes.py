"""seen's writes: the newest value of each key, at most once per interval, nothing lost at
the end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from operators.seen import LatestWrites


class SlowStore:
    """Records each put (with when it started); every put waits for ``release``."""

    def __init__(self) -> None:
        self.puts: list[tuple[str, bytes]] = []
        self.started: list[float] = []
        self.release = asyncio.Event()
        self.release.set()

    async def put(self, key: str, value: bytes) -> bool:
        self.started.append(asyncio.get_running_loop().time())
        await self.release.wait()
        self.puts.append((key, value))
        return True


class FakeOp:
    def __init__(self, store: SlowStore) -> None:
        self.store = store
        self.log = None


def values(store: SlowStore, key: str) -> list[bytes]:
    return [v for k, v in store.puts if k == key]


async def test_lines_within_the_interval_are_one_write_of_the_newest() -> None:
    store = SlowStore()
    writes = LatestWrites(cast(Any, FakeOp(store)), lambda: 0.3)
    loop = asyncio.get_running_loop()
    began = loop.time()
    for n in range(100):
        writes.put("seen.irc.net.alice", f"v{n}".encode())
        await asyncio.sleep(0)
    writes.put("seen.irc.net.bob", b"b0")
    assert store.puts == []  # nothing written before the interval ran out
    assert writes.latest("seen.irc.net.alice") == b"v99"  # !seen reads it before the store
    await asyncio.sleep(0.5)
    assert values(store, "seen.irc.net.alice") == [b"v99"]
    assert values(store, "seen.irc.net.bob") == [b"b0"]
    assert min(store.started) - began >= 0.29
    assert writes.latest("seen.irc.net.alice") is None

    writes.put("seen.irc.net.alice", b"v100")  # a new line starts the timer again
    await asyncio.sleep(0.5)
    assert values(store, "seen.irc.net.alice") == [b"v99", b"v100"]


async def test_a_value_being_written_is_still_read_and_a_newer_one_follows() -> None:
    store = SlowStore()
    store.release.clear()
    writes = LatestWrites(cast(Any, FakeOp(store)), lambda: 0.0)
    writes.put("k", b"v0")
    await asyncio.sleep(0.1)  # the timer (0 s) ran out: v0 is being written
    assert len(store.started) == 1
    assert writes.latest("k") == b"v0"  # in flight, not yet stored
    writes.put("k", b"v1")
    assert writes.latest("k") == b"v1"
    store.release.set()
    await asyncio.sleep(0.1)
    assert values(store, "k") == [b"v0", b"v1"]


async def test_finish_writes_what_waits_at_once() -> None:
    store = SlowStore()
    writes = LatestWrites(cast(Any, FakeOp(store)), lambda: 30.0)
    writes.put("k", b"v")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await writes.finish()
    assert loop.time() - started < 1
    assert store.puts == [("k", b"v")]


async def test_finish_is_bounded_when_the_store_hangs() -> None:
    store = SlowStore()
    store.release.clear()  # never released
    writes = LatestWrites(cast(Any, FakeOp(store)), lambda: 0.0)
    writes.put("k", b"v")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await writes.finish()
    assert loop.time() - started < 5


async def test_a_value_made_by_a_call_is_made_only_for_the_newest() -> None:
    store = SlowStore()
    writes = LatestWrites(cast(Any, FakeOp(store)), lambda: 0.2)
    made: list[int] = []

    def maker(n: int) -> Callable[[], bytes]:
        def make() -> bytes:
            made.append(n)
            return f"v{n}".encode()

        return make

    for n in range(50):
        writes.put("k", maker(n))
    assert made == []
    assert writes.latest("k") == b"v49"  # read by !seen: made for it
    await asyncio.sleep(0.4)
    assert store.puts == [("k", b"v49")]
    assert made == [49, 49]  # the read and the write; none of the 49 replaced ones
