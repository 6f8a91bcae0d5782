"""Operator leases: one JetStream KV key per operator id, so an id runs once per bus.

A supervisor creates the key ``<id>`` (value: its name) before it starts an operator and
renews it every third of the bucket's TTL; the key expires with the TTL when the supervisor
is gone, and another supervisor may then take it.

A lease is lost only when the bus says so: the key is held by another supervisor. A renewal
that fails because the bus is unreachable or busy (the embedded server restarting, JetStream
recovering its store) is tried again, and the operator keeps running; once the bus answers
again the lease is re-established, also when its key expired meanwhile.

Each key's revision is this supervisor's to keep: the operations on one key (take, renew,
give back) never interleave, and renewal rounds never overlap. Otherwise two renewals of one
key race with the same revision, and a lease given back while its renewal was in flight is
renewed again for an operator that is gone.

A round renews every key at once (at most :data:`IN_FLIGHT` requests in flight), and rounds
start every third of the TTL from the start of the one before. One request after the other,
a round took the number of keys times a round trip: at start-up, with hundreds of operators
starting and the event loop busy, a round outlasted the TTL, keys expired under a live
supervisor and another one could take them (two supervisors then ran one operator).
A renewal is a plain conditional put (``Nats-Expected-Last-Subject-Sequence``) whose
acknowledgement comes back on a subscription shared by all (:mod:`~eeveepy.bus.replies`):
through nats-py's key-value layer, renewing 200 leases every few seconds was half the
supervisor's CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from nats.aio.client import Client as NatsClient
from nats.js.api import KeyValueConfig
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue
from structlog.typing import FilteringBoundLogger

from eeveepy.aio import cancel_and_wait
from eeveepy.bus.names import leases_bucket_name
from eeveepy.bus.replies import Replies

__all__ = ["IN_FLIGHT", "Leases", "bucket_name"]

IN_FLIGHT = 256
"""Renewal requests a round keeps in flight at once."""
_EXPECTED = "Nats-Expected-Last-Subject-Sequence"
_WRONG_LAST_SEQUENCE = (10071, 10164)  # JetStream's error codes for a revision not the last


def bucket_name(prefix: str) -> str:
    """The KV bucket of the leases of the supervisors with subject prefix ``prefix``."""
    return leases_bucket_name(prefix)


class Leases:
    """The leases one supervisor holds, renewed in the background once started.

    ``connected`` says whether the bus connection is up (no renewal is tried while it is
    not); ``settled`` whether it has been up long enough for a failing renewal to be worth a
    warning.
    """

    def __init__(
        self,
        kv: KeyValue,
        replies: Replies,
        bucket: str,
        holder: str,
        ttl: float,
        *,
        log: FilteringBoundLogger,
        on_lost: Callable[[str], None],
        connected: Callable[[], bool] = lambda: True,
        settled: Callable[[], bool] = lambda: True,
    ) -> None:
        self.kv = kv
        self.holder = holder
        self._replies = replies
        self._subject = f"$KV.{bucket}."  # where a put of key K goes: $KV.<bucket>.K
        self.ttl = ttl
        self._log = log
        self._on_lost = on_lost
        self._connected = connected
        self._settled = settled
        self._revs: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._round = asyncio.Lock()
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        nc: NatsClient,
        bucket: str,
        holder: str,
        ttl: float,
        *,
        fresh: bool,
        log: FilteringBoundLogger,
        on_lost: Callable[[str], None],
        connected: Callable[[], bool] = lambda: True,
        settled: Callable[[], bool] = lambda: True,
    ) -> Leases:
        """Open (or create) the bucket; ``fresh`` deletes what an earlier run left in it."""
        js = nc.jetstream()
        if fresh:
            with contextlib.suppress(NotFoundError):  # nothing left: the first run
                await js.delete_key_value(bucket)
        try:
            kv = await js.key_value(bucket)
        except BucketNotFoundError:
            kv = await js.create_key_value(KeyValueConfig(bucket=bucket, ttl=ttl))
        return cls(
            kv,
            Replies(nc),
            bucket,
            holder,
            ttl,
            log=log,
            on_lost=on_lost,
            connected=connected,
            settled=settled,
        )

    @property
    def held(self) -> list[str]:
        """The operator ids whose lease this supervisor holds."""
        return list(self._revs)

    def _lock(self, op_id: str) -> asyncio.Lock:
        lock = self._locks.get(op_id)
        if lock is None:
            lock = self._locks[op_id] = asyncio.Lock()
        return lock

    async def acquire(self, op_id: str) -> str | None:
        """Take the lease of ``op_id``: None when held, else who (or what) is in the way."""
        async with self._lock(op_id):
            return await self._acquire(op_id)

    async def _acquire(self, op_id: str) -> str | None:
        if op_id in self._revs:
            return None
        try:
            rev = await self.kv.create(op_id, self.holder.encode())
        except KeyWrongLastSequenceError:
            try:
                entry = await self.kv.get(op_id)
            except KeyNotFoundError:
                return "another supervisor"
            holder = (entry.value or b"").decode() or "another supervisor"
            if holder == self.holder:
                self._revs[op_id] = entry.revision or 0
                return None
            return f"supervisor {holder}"
        except Exception as exc:
            return f"(lease unavailable: {exc})"
        self._revs[op_id] = rev
        return None

    async def release(self, op_id: str) -> None:
        """Give the lease of ``op_id`` back (quietly: it expires anyway)."""
        async with self._lock(op_id):
            rev = self._revs.pop(op_id, None)
            if rev is not None:
                with contextlib.suppress(Exception):
                    await self.kv.delete(op_id, last=rev)

    def start(self) -> None:
        """Renew every held lease every third of the TTL, from a task."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="leases")

    async def stop(self) -> None:
        """Stop renewing (the leases expire unless released). Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        await self._replies.close()

    async def renew(self) -> None:
        """One round: renew or re-establish each held lease; report the ones really lost.
        Rounds run one after the other (one asked for during a round waits for it)."""
        async with self._round:
            await self._renew_all()

    async def _renew_all(self) -> None:
        failed: list[str] = []
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def renew_one(op_id: str) -> None:
            async with gate:
                try:
                    async with self._lock(op_id):
                        lost_to = await self._renew(op_id)
                except Exception as exc:  # the bus is unreachable or busy: keep it, try again
                    failed.append(f"{op_id}: {exc or type(exc).__name__}")
                    return
            if lost_to is not None:
                self._revs.pop(op_id, None)
                self._log.error("lease lost: stopping", operator=op_id, holder=lost_to)
                self._on_lost(op_id)

        await asyncio.gather(*(renew_one(op_id) for op_id in list(self._revs)))
        if failed and not self._failing and self._settled():
            self._log.warning("leases not renewed; trying again", errors=failed)
        self._failing = bool(failed)

    async def _renew(self, op_id: str) -> str | None:
        """Renew one lease; the other holder's name when it is held by another."""
        rev = self._revs.get(op_id)
        if rev is None:
            return None
        try:
            self._revs[op_id] = await self._put(op_id, rev)
            return None
        except KeyWrongLastSequenceError:
            pass  # expired (a long outage) or taken: the bus says which
        try:
            entry = await self.kv.get(op_id)
        except KeyNotFoundError:  # expired, deleted: nobody holds it
            self._revs[op_id] = await self.kv.create(op_id, self.holder.encode())
            return None
        holder = (entry.value or b"").decode()
        if holder == self.holder:
            self._revs[op_id] = await self.kv.update(
                op_id, self.holder.encode(), last=entry.revision or 0
            )
            return None
        return holder or "another supervisor"

    async def _put(self, op_id: str, last: int) -> int:
        """Write our name to ``op_id`` if ``last`` is still its revision; the new revision."""
        payload = await self._replies.request(
            self._subject + op_id,
            self.holder.encode(),
            timeout=self.ttl / 3,
            headers={_EXPECTED: str(last)},
        )
        ack = json.loads(payload)
        error = ack.get("error")
        if error is not None:
            if error.get("err_code") in _WRONG_LAST_SEQUENCE:
                raise KeyWrongLastSequenceError(description=error.get("description"))
            APIError.from_error(error)  # raises the error's own class
        return int(ack["seq"])

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.ttl / 3
        await asyncio.sleep(period)
        while True:
            started = loop.time()
            if self._connected():  # (while it is down, a request only waits for its timeout)
                await self.renew()
            # A period after this round's start: a slow round must not push the renewals of
            # a key further apart than the TTL.
            await asyncio.sleep(max(0.0, period - (loop.time() - started)))
