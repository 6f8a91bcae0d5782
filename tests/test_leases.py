"""Operator leases on a real nats-server: renewals that overlap, leases given back while their
renewal is in flight, and hundreds held against a rival (the races that stopped healthy
operators at scale)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import structlog
from nats.aio.client import Client as NatsClient
from nats.js.errors import KeyNotFoundError

from eeveepy.bus.client import BusConfig, connect
from eeveepy.supervisor.leases import Leases


async def open_leases(nc: NatsClient, lost: list[str]) -> Leases:
    return await Leases.open(
        nc,
        "leases_" + uuid.uuid4().hex[:10],
        "me",
        30.0,
        fresh=True,
        log=structlog.get_logger("test"),
        on_lost=lost.append,
    )


async def test_overlapping_rounds_and_takes_lose_no_lease(nc: NatsClient) -> None:
    lost: list[str] = []
    leases = await open_leases(nc, lost)
    ids = [f"op{n}" for n in range(60)]
    assert await asyncio.gather(*(leases.acquire(i) for i in ids[:40])) == [None] * 40
    await asyncio.gather(
        *(leases.renew() for _ in range(5)),
        *(leases.acquire(i) for i in ids[40:]),
        *(leases.release(i) for i in ids[:10]),
    )
    assert lost == []
    assert sorted(leases.held) == sorted(ids[10:])
    for i in ids[10:]:
        assert (await leases.kv.get(i)).value == b"me"
    for i in ids[:10]:
        with pytest.raises(KeyNotFoundError):
            await leases.kv.get(i)
    await leases.renew()
    assert lost == []


async def test_a_lease_given_back_during_its_renewal_stays_given_back(nc: NatsClient) -> None:
    lost: list[str] = []
    leases = await open_leases(nc, lost)
    ids = [f"op{n}" for n in range(100)]
    await asyncio.gather(*(leases.acquire(i) for i in ids))
    renewal = asyncio.ensure_future(leases.renew())
    await asyncio.sleep(0)  # the round has started
    await leases.release("op0")  # its renewal is in flight: waits for it, then gives it back
    await renewal
    assert "op0" not in leases.held
    with pytest.raises(KeyNotFoundError):
        await leases.kv.get("op0")
    assert lost == []


async def busy_loop(stop: asyncio.Event, block: float) -> None:
    """Keep the event loop as busy as hundreds of operators starting keep the supervisor's:
    every turn of the loop takes ``block`` seconds more."""
    while not stop.is_set():
        time.sleep(block)  # noqa: ASYNC251 - blocking the loop is the point
        await asyncio.sleep(0)


async def test_a_rival_never_takes_a_lease_held_at_scale(nc: NatsClient, nats_url: str) -> None:
    """Hundreds of leases held by a busy supervisor while a rival keeps trying to take them:
    none may lapse (a rival holding one means two supervisors run that operator). Renewed one
    after the other, each waiting for a turn of the busy loop, a round outlasted the TTL."""
    lost: list[str] = []
    bucket = "leases_" + uuid.uuid4().hex[:10]
    ttl = 1.5
    log = structlog.get_logger("test")
    mine = await Leases.open(nc, bucket, "me", ttl, fresh=True, log=log, on_lost=lost.append)
    rival_nc = await connect(BusConfig(url=nats_url), name="test-leases-rival")
    stop = asyncio.Event()
    busy = asyncio.ensure_future(busy_loop(stop, 0.004))
    try:
        rival = await Leases.open(
            rival_nc, bucket, "rival", ttl, fresh=False, log=log, on_lost=lost.append
        )
        ids = [f"op{n}" for n in range(400)]
        assert await asyncio.gather(*(mine.acquire(i) for i in ids)) == [None] * len(ids)
        mine.start()
        taken: set[str] = set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * ttl
        while loop.time() < deadline:
            got = await asyncio.gather(*(rival.acquire(i) for i in ids))
            taken.update(i for i, holder in zip(ids, got, strict=True) if holder is None)
            await asyncio.sleep(ttl / 4)
        assert sorted(taken) == [], f"{len(taken)} of {len(ids)} leases taken by a rival"
        assert lost == []
    finally:
        stop.set()
        await busy
        await mine.stop()
        await rival_nc.close()


async def test_a_renewal_takes_back_an_expired_lease_and_reports_a_taken_one(
    nc: NatsClient,
) -> None:
    lost: list[str] = []
    leases = await open_leases(nc, lost)
    assert await asyncio.gather(*(leases.acquire(i) for i in ("a", "b", "c"))) == [None] * 3
    await leases.kv.delete("a")  # as if it expired during an outage: nobody holds it
    await leases.kv.put("b", b"rival")  # taken meanwhile by another supervisor
    await leases.renew()
    assert lost == ["b"]
    assert sorted(leases.held) == ["a", "c"]
    for key in ("a", "c"):
        assert (await leases.kv.get(key)).value == b"me"
    await leases.renew()  # the revisions kept are the ones written
    assert lost == ["b"]
    await leases.stop()
