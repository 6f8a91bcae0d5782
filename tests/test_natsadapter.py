"""What eeveepy.bus.natsadapter relies on in nats-py is still there, and the fast path works.

If one of these fails after an upgrade of nats-py, do not loosen the pin in pyproject.toml
until natsadapter.py is brought up to date: without the fast path eeveepy still works, but a
changed ``_process_msg`` could deliver nothing at all.
"""

from __future__ import annotations

import asyncio
import uuid

import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from eeveepy.bus.client import BusConfig, barrier, connect
from eeveepy.bus.natsadapter import (
    EeveeClient,
    add_fast_path,
    add_header_path,
    incompatibilities,
    nats_py_version,
    remove_fast_path,
)

WAIT = 5.0


def test_nats_py_still_offers_what_the_adapter_relies_on() -> None:
    found = incompatibilities()
    assert not found, (
        f"nats-py {nats_py_version()} changed what eeveepy/bus/natsadapter.py relies on: "
        + "; ".join(found)
    )


async def _headers_received(nc: NatsClient, headers: dict[str, str]) -> dict[str, str]:
    subject = "adapter.headers." + uuid.uuid4().hex
    sub = await nc.subscribe(subject)
    try:
        await nc.publish(subject, b"x", headers=headers)
        msg = await sub.next_msg(timeout=WAIT)
        return dict(msg.headers or {})
    finally:
        await sub.unsubscribe()


async def test_headers_on_the_wire_are_what_nats_py_sends(nats_url: str) -> None:
    ours = await connect(BusConfig(url=nats_url), name="adapter-headers")
    theirs = NatsClient()
    await theirs.connect(servers=[nats_url])
    hostile = {" X-Pad ": "  padded  ", "X-Lines": "a\r\nInjected: yes\r\n\r\nPUB x 1", "": "gone"}
    try:
        for headers in ({"Nats-Msg-Id": "01ABC", "X-Ünicode": "ü"}, hostile):
            if "X-Ünicode" in headers:  # not a token: both refuse it
                for client in (ours, theirs):
                    with pytest.raises(nats.errors.BadHeaderError):
                        await client.publish("adapter.x", b"", headers=headers)
                headers = {"Nats-Msg-Id": "01ABC", "X-Unicode": "ü"}
            got = await _headers_received(ours, headers)
            assert got == await _headers_received(theirs, headers), headers
        assert got == {"X-Pad": "padded", "X-Lines": "a  Injected: yes    PUB x 1"}
    finally:
        await ours.close()
        await theirs.close()


async def test_a_plain_publish_is_refused_and_delivered_as_nats_py_does(nats_url: str) -> None:
    ours = await connect(BusConfig(url=nats_url), name="adapter-plain")
    theirs = NatsClient()
    await theirs.connect(servers=[nats_url])
    subject = "adapter.plain." + uuid.uuid4().hex
    try:
        for bad in ("", "a b", "inject\r\nPUB x 1", "tab\there", "new\nline"):
            for client in (ours, theirs):
                with pytest.raises(nats.errors.BadSubjectError):
                    await client.publish(bad, b"x")
        for client in (ours, theirs):
            with pytest.raises(nats.errors.MaxPayloadError):
                await client.publish(subject, b"x" * (client.max_payload + 1))
        sub = await theirs.subscribe(subject)
        await barrier(theirs)
        for i in range(300):  # more subjects than a client remembers, then this one again
            await ours.publish(f"{subject}.{i}", b"")
        for payload in (b"one", b"", b"PUB x 1\r\nthree"):
            await ours.publish(subject, payload)
        await ours.flush()
        for payload in (b"one", b"", b"PUB x 1\r\nthree"):
            msg = await sub.next_msg(timeout=WAIT)
            assert (msg.subject, msg.data, msg.reply, msg.headers) == (subject, payload, "", None)
        assert ours.stats["out_msgs"] == 303
    finally:
        await ours.close()
        await theirs.close()


async def test_what_one_turn_publishes_goes_out_in_one_write(nats_url: str) -> None:
    nc = await connect(BusConfig(url=nats_url), name="adapter-writes")
    subject = "adapter.writes." + uuid.uuid4().hex
    received: list[bytes] = []

    async def receive(msg: Msg) -> None:
        received.append(msg.data)

    sub = await nc.subscribe(subject, cb=receive)
    await barrier(nc)
    transport = nc._transport
    assert transport is not None
    writes = 0
    writelines = transport.writelines

    def counting(data: list[bytes]) -> None:
        nonlocal writes
        writes += 1
        writelines(data)

    transport.writelines = counting  # type: ignore[method-assign]
    try:

        async def publisher(k: int) -> None:
            for i in range(10):
                await nc.publish(subject, f"{k}.{i}".encode())

        await asyncio.gather(*(publisher(k) for k in range(5)))
        await asyncio.sleep(0)  # the turn ends: its write is made
        assert writes == 1, f"50 publishes of one turn took {writes} writes"
        await nc.publish(subject, b"lone")
        await asyncio.sleep(0)  # a lone publish waits for no more than the end of its turn
        assert writes == 2
        for _ in range(int(WAIT / 0.01)):
            if len(received) == 51:
                break
            await asyncio.sleep(0.01)
        assert sorted(received[:50]) == sorted(
            f"{k}.{i}".encode() for k in range(5) for i in range(10)
        )
        assert received[50] == b"lone"
    finally:
        transport.writelines = writelines  # type: ignore[method-assign]
        await sub.unsubscribe()
        await nc.close()


async def test_fast_path_gets_raw_messages_and_keeps_the_stats(nats_url: str) -> None:
    nc = await connect(BusConfig(url=nats_url), name="adapter-test")
    try:
        assert isinstance(nc, EeveeClient), f"connect() should give an EeveeClient, not {nc!r}"
        fast: list[tuple[bytes, bytes, bytes]] = []
        slow: list[bytes] = []

        async def fallback(msg: Msg) -> None:
            slow.append(msg.data)

        sub = await nc.subscribe("adapter.test", cb=fallback)
        assert add_fast_path(nc, sub, lambda s, r, d: fast.append((s, r, d)))
        await barrier(nc)
        before = nc.stats["in_msgs"]
        await nc.publish("adapter.test", b"one", reply="adapter.reply")
        await nc.flush()
        for _ in range(int(WAIT / 0.01)):
            if fast:
                break
            await asyncio.sleep(0.01)
        assert fast == [(b"adapter.test", b"adapter.reply", b"one")], (
            f"nats-py {nats_py_version()}: the fast path got nothing (slow path: {slow})"
        )
        assert slow == []
        assert nc.stats["in_msgs"] == before + 1

        remove_fast_path(nc, sub)
        await nc.publish("adapter.test", b"two")
        await nc.flush()
        for _ in range(int(WAIT / 0.01)):
            if slow:
                break
            await asyncio.sleep(0.01)
        assert slow == [b"two"]
        assert len(fast) == 1
    finally:
        await nc.close()


async def test_header_path_gets_the_raw_header_block(nc: NatsClient) -> None:
    assert isinstance(nc, EeveeClient)
    got: list[tuple[bytes, bytes, bytes, bytes]] = []

    async def fallback(msg: Msg) -> None:
        raise AssertionError(f"the header path was skipped: {msg}")

    sub = await nc.subscribe("adapter.headers", cb=fallback)
    assert add_header_path(nc, sub, lambda s, r, d, h: got.append((s, r, d, h)))
    await barrier(nc)
    await nc.publish("adapter.headers", b"one", headers={"Nats-Msg-Id": "id-1"})
    await nc.publish("adapter.headers", b"two")
    await nc.flush()
    for _ in range(int(WAIT / 0.01)):
        if len(got) == 2:
            break
        await asyncio.sleep(0.01)
    assert [(s, d) for s, _, d, _ in got] == [
        (b"adapter.headers", b"one"),
        (b"adapter.headers", b"two"),
    ]
    assert b"Nats-Msg-Id: id-1\r\n" in got[0][3]
    assert got[1][3] == b""
    remove_fast_path(nc, sub)
    assert sub._id not in nc._header_paths
