"""Operators' buckets under a prefix: made with the prefix's name, and an installation's old
bucket (named under the default prefix) copied into it once on the embedded server."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import structlog
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from structlog.testing import capture_logs
from structlog.typing import FilteringBoundLogger

from eeveepy.bus.buckets import BucketsUnderWay
from eeveepy.bus.names import kv_bucket_name
from eeveepy.runtime.kv import open_bucket


async def _made(
    js: JetStreamContext, ids: list[str], log: FilteringBoundLogger, **how: Any
) -> None:
    """Make the buckets of ``ids`` as the supervisor does, and wait for every one."""
    buckets = BucketsUnderWay()
    buckets.make(js, ids, log, **how)
    await asyncio.gather(*(buckets.wait(op_id) for op_id in ids))


async def test_an_old_bucket_is_copied_under_the_prefix_once(nc: NatsClient) -> None:
    js = nc.jetstream()
    op_id, prefix = "mig" + uuid.uuid4().hex[:8], "acme.bot"
    old = await js.create_key_value(bucket=kv_bucket_name(op_id))  # eevee_<id>
    await old.put("score.python", b"3")
    await old.put("gone", b"x")
    await old.delete("gone")
    log = structlog.get_logger("test")
    with capture_logs() as logs:
        await _made(js, [op_id], log, prefix=prefix, migrate=True)
    new = await js.key_value(kv_bucket_name(op_id, prefix))
    assert (await new.get("score.python")).value == b"3"
    assert await new.keys() == ["score.python"]
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "key-value bucket copied to its prefixed name; delete the old one when done"
    ]
    await new.put("score.python", b"4")
    await _made(js, [op_id], log, prefix=prefix, migrate=True)  # exists: not again
    assert (await new.get("score.python")).value == b"4"
    for bucket in (kv_bucket_name(op_id), kv_bucket_name(op_id, prefix)):
        await js.delete_key_value(bucket)


async def test_no_copy_on_a_shared_bus(nc: NatsClient) -> None:
    js = nc.jetstream()
    op_id, prefix = "mig" + uuid.uuid4().hex[:8], "other"
    old = await js.create_key_value(bucket=kv_bucket_name(op_id))  # another system's
    await old.put("k", b"v")
    await _made(js, [op_id], structlog.get_logger("test"), prefix=prefix)
    new = await js.key_value(kv_bucket_name(op_id, prefix))
    assert (await new.status()).values == 0
    for bucket in (kv_bucket_name(op_id), kv_bucket_name(op_id, prefix)):
        await js.delete_key_value(bucket)


async def test_a_start_waits_for_its_own_bucket_alone(nc: NatsClient) -> None:
    js = nc.jetstream()
    ids = ["under" + uuid.uuid4().hex[:8] for _ in range(3)]
    buckets = BucketsUnderWay()
    buckets.make(js, ids, structlog.get_logger("test"))
    await buckets.wait(ids[0])
    assert (await (await js.key_value(kv_bucket_name(ids[0]))).status()).bucket == kv_bucket_name(
        ids[0]
    )
    await buckets.wait("nobody")  # none under way: at once
    await buckets.stop(timeout=5)
    await buckets.wait(ids[1])  # given up: nothing to wait for
    for op_id in ids:
        with contextlib.suppress(NotFoundError):
            await js.delete_key_value(kv_bucket_name(op_id))


async def test_buckets_under_way_stop_within_its_bound(nc: NatsClient) -> None:
    buckets = BucketsUnderWay()
    # Never answered: JetStream requests on a prefix nobody serves.
    buckets.make(nc.jetstream(prefix="$NOBODY.API"), ["stuck"], structlog.get_logger("test"))
    t0 = time.monotonic()
    await buckets.stop(timeout=1.0)
    assert time.monotonic() - t0 < 2.0


async def streams(js: JetStreamContext, *op_ids: str) -> set[str]:
    """Which of the buckets of ``op_ids`` exist, by their streams' names (listed: a lookup
    would make a lazy one)."""
    wanted = {f"KV_{kv_bucket_name(op_id)}" for op_id in op_ids}
    return {info.config.name for info in await js.streams_info()} & wanted  # type: ignore[misc]


async def test_a_lazy_bucket_is_made_when_first_looked_up_and_only_then(nc: NatsClient) -> None:
    js = nc.jetstream()
    used, unused = ("lazy" + uuid.uuid4().hex[:8] for _ in range(2))
    buckets = BucketsUnderWay()
    await buckets.begin(nc, [used, unused], {used, unused}, structlog.get_logger("test"))
    try:
        await asyncio.sleep(0.3)
        assert not await streams(js, used, unused)  # nothing made until looked up
        # The runtime's way: look up, and again, until the supervisor has made it.
        kv = await open_bucket(nc, kv_bucket_name(used), wait=10)
        assert (await kv.status()).bucket == kv_bucket_name(used)
        await asyncio.sleep(0.3)
        assert await streams(js, used, unused) == {f"KV_{kv_bucket_name(used)}"}
    finally:
        await buckets.stop(timeout=5)
        with contextlib.suppress(NotFoundError):
            await js.delete_key_value(kv_bucket_name(used))


async def test_without_a_maker_the_lookups_end_and_the_runtime_makes_it(nc: NatsClient) -> None:
    bucket = kv_bucket_name("alone" + uuid.uuid4().hex[:8])
    loop = asyncio.get_running_loop()
    started = loop.time()
    kv = await open_bucket(nc, bucket, wait=0.5)  # (this user may make streams)
    assert 0.5 <= loop.time() - started < 5
    assert (await kv.status()).bucket == bucket
    await nc.jetstream().delete_key_value(bucket)


async def test_no_lazy_bucket_where_one_may_be_copied_first(nc: NatsClient) -> None:
    js = nc.jetstream()
    op_id, prefix = "eager" + uuid.uuid4().hex[:8], "acme.lazy"
    buckets = BucketsUnderWay()
    log = structlog.get_logger("test")
    await buckets.begin(nc, [op_id], {op_id}, log, prefix=prefix, migrate=True)
    try:
        await buckets.wait(op_id)  # made now, not when looked up: a start waits for it
        names = {info.config.name for info in await js.streams_info()}
        assert f"KV_{kv_bucket_name(op_id, prefix)}" in names
    finally:
        await buckets.stop(timeout=5)
        with contextlib.suppress(NotFoundError):
            await js.delete_key_value(kv_bucket_name(op_id, prefix))
