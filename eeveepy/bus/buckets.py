"""Operators' key-value buckets, made by the supervisor (before the operators start, or when
first looked up).

Making a bucket is making a JetStream stream, and whoever may make a stream chooses the
subjects it captures: an operator allowed to create its own bucket could capture other
parties' subjects in it (replies, logs) and read them back. So, with bus permissions, only
the supervisor creates buckets (:class:`BucketsUnderWay`, the same configuration the runtime
would use, with ``[bus] replicas`` copies), and an operator may only use its own (see
:mod:`eeveepy.bus.permissions`).

On the embedded server under the default prefix, the bucket of an operator run by the eeveepy
runtime (a ``module``) is made when it is first looked up instead
(:meth:`BucketsUnderWay.begin`): nats-server tells of every JetStream API request in an
audit advisory, and the runtime keeps looking its bucket up until it is there
(:func:`~eeveepy.runtime.kv.open_bucket`). Most operators never use theirs, and a new bucket
is a stream of its own (files, goroutines): made for each of 200 new operators, they were two
thirds of nats-server's CPU while they started, and each start waited for its bucket.

Bucket names carry the subject prefix (:func:`~eeveepy.bus.names.kv_bucket_name`). Under the
default prefix they are the names eeveepy always used; under another prefix an installation
made before had its buckets under the default one (``eevee_<id>``): on the embedded server
(this installation's alone) :class:`BucketsUnderWay` copies such a bucket's keys into the new
one once, and leaves the old bucket for its owner to delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import KeyValueConfig
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, NoKeysError, NotFoundError
from structlog.typing import FilteringBoundLogger

from eeveepy.bus.jetstream import explain
from eeveepy.bus.names import kv_bucket_name
from eeveepy.protocol.subjects import DEFAULT_PREFIX

__all__ = ["AUDIT_SUBJECT", "BucketsUnderWay", "ensure_bucket"]

AUDIT_SUBJECT = "$JS.EVENT.ADVISORY.API"
"""Where nats-server tells of each JetStream API request it answered."""
_LOOKUP = "$JS.API.STREAM.INFO.KV_"


@dataclass(frozen=True, slots=True)
class _Making:
    """How a bucket is made: under which prefix, with how many copies, and whether one left
    under the default prefix's name is copied into it."""

    prefix: str
    replicas: int
    migrate: bool


class BucketsUnderWay:
    """Operators' buckets being made while the operators start, each start waiting for its own
    bucket alone (:meth:`wait`): made all at once before the first start, 200 new buckets held
    up every operator by 0.6 s. Failures are logged (the operator then says so itself when it
    needs the bucket)."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[bool]] = {}
        self._lazy: dict[str, tuple[str, _Making]] = {}  # bucket -> operator id, how
        self._audit: Subscription | None = None

    def make(
        self,
        js: JetStreamContext,
        operator_ids: Iterable[str],
        log: FilteringBoundLogger,
        *,
        prefix: str = DEFAULT_PREFIX,
        replicas: int = 1,
        migrate: bool = False,
    ) -> None:
        """Begin making the buckets of ``operator_ids``, all at once. ``migrate``: copy a bucket
        left under the default prefix's name into a new one (see the module's docstring)."""
        making = _Making(prefix, replicas, migrate)
        loop = asyncio.get_running_loop()
        for op_id in operator_ids:
            if op_id not in self._tasks:
                self._tasks[op_id] = loop.create_task(_ensure(js, op_id, log, making))

    async def begin(
        self,
        nc: NatsClient,
        operator_ids: Iterable[str],
        lazy: Collection[str],
        log: FilteringBoundLogger,
        *,
        prefix: str = DEFAULT_PREFIX,
        replicas: int = 1,
        migrate: bool = False,
    ) -> None:
        """Begin making the buckets of ``operator_ids`` now (:meth:`make`), those of ``lazy``
        when first looked up (:meth:`_on_lookup`), unless a bucket may be copied from its old
        name: its operator must not start before the copy is whole."""
        if migrate and prefix != DEFAULT_PREFIX:
            lazy = ()
        now = [op_id for op_id in operator_ids if op_id not in lazy]
        self.make(nc.jetstream(), now, log, prefix=prefix, replicas=replicas, migrate=migrate)
        await self._on_lookup(nc, lazy, log, _Making(prefix, replicas, migrate))

    async def _on_lookup(
        self,
        nc: NatsClient,
        operator_ids: Iterable[str],
        log: FilteringBoundLogger,
        making: _Making,
    ) -> None:
        """Make the buckets of ``operator_ids`` when they are first looked up (a lookup that
        finds none is enough): ``nc`` must receive the server's audit advisories."""
        for op_id in operator_ids:
            self._lazy[kv_bucket_name(op_id, making.prefix)] = (op_id, making)
        if self._audit is None and self._lazy:
            js = nc.jetstream()

            async def looked_up(msg: Msg) -> None:
                if _LOOKUP.encode() in msg.data:  # (most API requests are not lookups)
                    self._looked_up(js, msg.data, log)

            self._audit = await nc.subscribe(AUDIT_SUBJECT, cb=looked_up)

    def _looked_up(self, js: JetStreamContext, data: bytes, log: FilteringBoundLogger) -> None:
        try:
            subject = json.loads(data).get("subject", "")
        except ValueError:
            return
        if not subject.startswith(_LOOKUP):
            return
        lazy = self._lazy.get(subject.removeprefix(_LOOKUP))
        if lazy is None or lazy[0] in self._tasks:
            return  # not one of ours, or under way already
        op_id, making = lazy
        task = self._tasks[op_id] = asyncio.get_running_loop().create_task(
            _ensure(js, op_id, log, making)
        )

        def done(task: asyncio.Task[bool]) -> None:
            if self._tasks.get(op_id) is task:
                del self._tasks[op_id]
            if not task.cancelled() and task.result():
                self._lazy.pop(kv_bucket_name(op_id, making.prefix), None)
            # else: still to be made (the next lookup tries again)

        task.add_done_callback(done)

    async def wait(self, op_id: str) -> None:
        """Return once ``op_id``'s bucket is made or failed (at once when none is under way)."""
        task = self._tasks.get(op_id)
        if task is not None:
            await asyncio.shield(task)  # a start cancelled meanwhile leaves the others waiting
            self._tasks.pop(op_id, None)

    async def stop(self, timeout: float = 1.0) -> None:
        """Give up the buckets still under way (bounded by ``timeout``). Idempotent."""
        audit, self._audit = self._audit, None
        if audit is not None:
            with contextlib.suppress(Exception):  # (the connection may be closed already)
                await audit.unsubscribe()
        self._lazy.clear()
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)


async def _ensure(
    js: JetStreamContext, op_id: str, log: FilteringBoundLogger, making: _Making
) -> bool:
    """Make ``op_id``'s bucket unless it exists; False (logged) when it could not be."""
    prefix, replicas = making.prefix, making.replicas
    bucket = kv_bucket_name(op_id, prefix)
    try:
        made = await ensure_bucket(js, KeyValueConfig(bucket=bucket, replicas=replicas))
        if made and making.migrate and prefix != DEFAULT_PREFIX:
            await _migrate(js, kv_bucket_name(op_id), bucket, log)
    except Exception as exc:  # JetStream off or unreachable: nothing to do about it now
        log.warning(
            "cannot make an operator's key-value bucket",
            bucket=bucket,
            error=explain(exc, replicas),
        )
        return False
    return True


async def ensure_bucket(js: JetStreamContext, config: KeyValueConfig) -> bool:
    """Create the bucket ``config`` unless it exists; True when this call made it."""
    try:
        await js.key_value(config.bucket)
        return False
    except NotFoundError:
        pass
    try:
        await js.create_key_value(config)
    except BadRequestError:  # made meanwhile (another supervisor, the operator itself)
        return False
    return True


async def _migrate(js: JetStreamContext, old: str, new: str, log: FilteringBoundLogger) -> None:
    try:
        source = await js.key_value(old)
    except NotFoundError:
        return  # nothing to carry over
    target = await js.key_value(new)
    try:
        keys = await source.keys()
    except NoKeysError:
        keys = []
    for key in keys:
        entry = await source.get(key)
        if entry.value is not None:
            await target.put(key, entry.value)
    log.warning(
        "key-value bucket copied to its prefixed name; delete the old one when done",
        old=old,
        new=new,
        keys=len(keys),
    )
