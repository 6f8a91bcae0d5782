"""Operator leases on a real nats-server: renewals that overlap, and leases given back while
their renewal is in flight (the races that stopped healthy operators at scale)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import structlog
from nats.aio.client import Client as NatsClient
from nats.js.errors import KeyNotFoundError

from eeveepy.bus.client import BusConfig, connect
from eeveepy.supervisor.leases import Leases


@pytest_asyncio.fixture(loop_scope="session")
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await connect(BusConfig(url=nats_url), name="test-leases")
    try:
        yield client
    finally:
        await client.close()


async def open_leases(nc: NatsClient, lost: list[str]) -> Leases:
    return await Leases.open(
        nc.jetstream(),
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
