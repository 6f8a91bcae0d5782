"""LogShipper against the session's nats-server: order, drops, retries, stop."""

from __future__ import annotations

import asyncio
import threading

import pytest
from nats.aio.client import Client as NatsClient

from eeveepy.bus.client import barrier
from eeveepy.bus.ipc import Ipc
from eeveepy.logs.shipper import LogShipper
from eeveepy.protocol.models import LogLevel
from eeveepy.protocol.subjects import Subjects

pytest.register_assert_rewrite("tests.logs_fixtures")  # imported here, before pytest_plugins

from tests.logs_fixtures import WAIT, Collector, rec, unique_prefix  # noqa: E402

pytest_plugins = ["tests.logs_fixtures"]


async def test_shipper_publishes_in_order(nc: NatsClient, ipc: Ipc) -> None:
    seen = Collector()
    await seen.start(nc, ipc.subjects.prefix)
    shipper = LogShipper(ipc)
    shipper.start()
    for i in range(50):
        shipper.submit(rec("echo" if i % 2 else "irc.libera", str(i), LogLevel.WARNING))
    await seen.wait_for(50)
    await shipper.stop()
    assert seen.events == [str(i) for i in range(50)]
    p = ipc.subjects.prefix
    assert seen.subjects[:2] == [f"{p}.log.warning.irc.libera", f"{p}.log.warning.echo"]
    assert shipper.dropped == 0
    assert shipper.published == 50


async def test_shipper_drops_oldest_then_reports(nc: NatsClient, ipc: Ipc) -> None:
    seen = Collector()
    await seen.start(nc, ipc.subjects.prefix)
    shipper = LogShipper(ipc, capacity=10)
    for i in range(25):
        shipper.submit(rec("echo", str(i)))
    assert shipper.dropped == 15
    shipper.start()
    await seen.wait_for(11)
    await shipper.stop()
    warnings = [e.body for e in seen.envs if e.body.event == "log events dropped"]
    assert len(warnings) == 1
    assert warnings[0].fields == {"dropped": 15}
    assert warnings[0].operator == "supervisor"
    assert warnings[0].level is LogLevel.WARNING
    assert [e for e in seen.events if e != "log events dropped"] == [str(i) for i in range(15, 25)]


async def test_shipper_retries_until_the_bus_is_there(nc: NatsClient) -> None:
    ipc = Ipc(Subjects(unique_prefix()), "supervisor")  # not attached: publish fails
    seen = Collector()
    await seen.start(nc, ipc.subjects.prefix)
    shipper = LogShipper(ipc, max_backoff=0.1)
    shipper.start()
    for i in range(3):
        shipper.submit(rec("echo", str(i)))
    await asyncio.sleep(0.3)
    assert shipper.pending == 3
    await ipc.attach(nc)
    await seen.wait_for(3)
    await shipper.stop()
    assert seen.events == ["0", "1", "2"]


async def test_shipper_skips_records_it_can_never_publish(nc: NatsClient, ipc: Ipc) -> None:
    seen = Collector()
    await seen.start(nc, ipc.subjects.prefix)
    shipper = LogShipper(ipc)
    shipper.submit(rec("Not A Valid Id", "lost"))
    shipper.submit(rec("echo", "kept"))
    shipper.start()
    await seen.wait_for(1)
    await shipper.stop()
    assert seen.events == ["kept"]
    assert shipper.failed == 1


async def test_shipper_stop_flushes_and_submit_from_threads(nc: NatsClient, ipc: Ipc) -> None:
    seen = Collector()
    await seen.start(nc, ipc.subjects.prefix)
    shipper = LogShipper(ipc)
    shipper.start()
    await asyncio.sleep(0)

    def spam(k: int) -> None:
        for i in range(100):
            shipper.submit(rec("t", f"{k}.{i}"))

    threads = [threading.Thread(target=spam, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    await shipper.stop(timeout=WAIT)
    await barrier(nc)
    await seen.wait_for(400)
    assert shipper.pending == 0
    for k in range(4):  # each thread's records stay in its order
        mine = [e for e in seen.events if e.startswith(f"{k}.")]
        assert mine == [f"{k}.{i}" for i in range(100)]
