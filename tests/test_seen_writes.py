"""seen's writes: one in flight per key, the newest value waiting, nothing lost at the end."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from operators.seen import LatestWrites


class SlowStore:
    """Records each put; every put waits for ``release`` (a store round trip)."""

    def __init__(self) -> None:
        self.puts: list[tuple[str, bytes]] = []
        self.release = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight: dict[str, int] = {}

    async def put(self, key: str, value: bytes) -> bool:
        self.in_flight += 1
        self.most_in_flight[key] = max(self.most_in_flight.get(key, 0), self.in_flight)
        await self.release.wait()
        self.in_flight -= 1
        self.puts.append((key, value))
        return True


class FakeOp:
    def __init__(self, store: SlowStore) -> None:
        self.store = store
        self.log = None


async def test_a_burst_writes_the_first_and_the_newest_value() -> None:
    store = SlowStore()
    writes = LatestWrites(cast(Any, FakeOp(store)))
    writes.put("seen.irc.net.alice", b"v0")
    await asyncio.sleep(0)  # the writer takes v0: a write in flight
    for n in range(1, 100):
        writes.put("seen.irc.net.alice", f"v{n}".encode())
    writes.put("seen.irc.net.bob", b"b0")
    await asyncio.sleep(0)
    assert writes.latest("seen.irc.net.alice") == b"v99"  # !seen reads it before the store
    assert store.most_in_flight["seen.irc.net.alice"] == 1
    store.release.set()
    await writes.finish()
    alice = [v for k, v in store.puts if k == "seen.irc.net.alice"]
    assert alice == [b"v0", b"v99"]  # the one in flight, then the newest of what waited
    assert [v for k, v in store.puts if k == "seen.irc.net.bob"] == [b"b0"]
    assert writes.latest("seen.irc.net.alice") is None


async def test_finish_is_bounded_when_the_store_hangs() -> None:
    store = SlowStore()  # never released
    writes = LatestWrites(cast(Any, FakeOp(store)))
    writes.put("k", b"v")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await writes.finish()
    assert loop.time() - started < 5
