"""Key-value writes that are never silently lost: kept, retried, and reported until stored.

:attr:`Operator.store <eeveepy.runtime.Operator.store>` writes to the operator's JetStream KV
bucket (the same one :meth:`Operator.kv <eeveepy.runtime.Operator.kv>` opens)::

    await op.store.put("seen.irc.libera.alice", value)          # last writer wins
    await op.store.modify("karma.irc.libera.bob", add_one)      # read, change, compare-and-set
    value = await op.store.get("karma.irc.libera.bob")           # bytes or None

A write that fails (the disk is full or read-only, JetStream is disabled, the bus is away...)
is not lost: it is kept in memory, in order per key, and retried with backoff (0.2 s doubling
to 5 s, jittered) until it is stored. Meanwhile the operator is **degraded**
(``op.health``, source ``kv``; logged at error level, shown in ``eevee ps``), :meth:`get`
answers with the waiting writes applied (an operator reads its own writes) and new writes
queue behind the waiting ones. Once everything is stored the operator is healthy again.

Each write carries a message id (``Nats-Msg-Id``), so a retry after an ambiguous failure (a
timeout after the server stored it) is recognised by the server as a duplicate instead of
being applied twice, and a ``modify`` whose compare-and-set fails because its own earlier try
landed is recognised by that id too.

Limits: waiting writes live in memory, at most ``max_pending`` (10 000; beyond that new writes
are refused, logged and counted in :attr:`KvStore.dropped`); writes still waiting when the
operator stops are logged at error level as lost. ``modify``'s function must be pure: it may run
again on a newer value when another writer got there first.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from structlog.typing import FilteringBoundLogger

from eeveepy.errors import StoreError
from eeveepy.runtime.health import OperatorHealth

__all__ = ["Bucket", "KvStore", "Update"]

Update = Callable[[bytes | None], bytes]
"""What :meth:`KvStore.modify` applies: the current value (None: no value) -> the new one."""

_SOURCE: Final = "kv"
_KV_OPERATION: Final = "KV-Operation"  # set on deletes and purges (no value)
_MSG_ID: Final = "Nats-Msg-Id"
_EXPECTED_LAST: Final = "Nats-Expected-Last-Subject-Sequence"
_WRONG_LAST_SEQUENCE: Final = (10071, 10164)  # JetStream's compare-and-set failure codes
_NO_MESSAGE: Final = 10037  # JetStream's "no message found" (as opposed to no stream)
_CAS_ROUNDS: Final = 20


@dataclass(frozen=True)
class Bucket:
    """Where the writes go: a JetStream context and the KV bucket's name."""

    js: JetStreamContext
    name: str

    @property
    def stream(self) -> str:
        return f"KV_{self.name}"

    def subject(self, key: str) -> str:
        return f"$KV.{self.name}.{key}"


@dataclass
class _Write:
    update: Update
    replace: bool  # a put: the old value does not matter
    # The try in flight: (value, expected revision or None for a put, message id).
    attempt: tuple[bytes, int | None, str] | None = None
    errors: int = field(default=0)


class KvStore:
    """An operator's KV writes with retry and health reporting; see the module docstring."""

    def __init__(
        self,
        bucket: Callable[[], Awaitable[Bucket]],
        health: OperatorHealth,
        log: Callable[[], FilteringBoundLogger],
        *,
        retry_initial: float = 0.2,
        retry_max: float = 5.0,
        max_pending: int = 10_000,
    ) -> None:
        self._bucket = bucket
        self._health = health
        self._log = log
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.max_pending = max_pending
        self.dropped = 0
        """Writes refused because ``max_pending`` writes were already waiting."""
        self._pending: dict[str, list[_Write]] = {}
        self._retry: asyncio.Task[None] | None = None
        self._draining = asyncio.Lock()  # one pass over the waiting writes at a time
        self._last_error = ""

    @property
    def pending(self) -> int:
        """Writes waiting to be stored."""
        return sum(len(writes) for writes in self._pending.values())

    # -- the author's API --------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        """The value at ``key`` (None: none), with the writes still waiting for it applied.

        Raises :class:`StoreError` when the store cannot be read.
        """
        try:
            value, _, _ = await self._read(await self._bucket(), key)
        except Exception as exc:
            raise StoreError(f"cannot read {key!r} from the key-value store: {exc!r}") from None
        for write in self._pending.get(key, []):
            with contextlib.suppress(Exception):  # a failing update is dropped when stored
                value = write.update(value)
        return value

    async def put(self, key: str, value: bytes) -> bool:
        """Store ``value`` at ``key``; True when stored now, False when kept for retry."""
        return await self._write(key, _Write(lambda _old: value, replace=True))

    async def modify(self, key: str, update: Update) -> bool:
        """Store ``update(current value)`` at ``key`` with compare-and-set (re-read and applied
        again while other writers get there first); True when stored now, False when kept."""
        return await self._write(key, _Write(update, replace=False))

    async def flush(self, timeout: float) -> bool:
        """Try to store every waiting write now, within ``timeout``; True if none is left."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                return await self._store_pending()
        return not self._pending

    async def close(self, timeout: float = 1.0) -> None:
        """Stop retrying after one last bounded try; log what could not be stored."""
        task, self._retry = self._retry, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pending and not await self.flush(timeout):
            self._log().error(
                "key-value writes lost at stop: the store did not take them",
                lost=self.pending,
                keys=list(self._pending)[:5],
                error=self._last_error,
            )
        self._pending.clear()

    # -- writing -----------------------------------------------------------------------------

    async def _write(self, key: str, write: _Write) -> bool:
        if not self._pending:
            try:
                stored = await self._apply(await self._bucket(), key, write)
            except Exception as exc:
                self._failed(exc)
            else:
                return stored
        elif self.pending >= self.max_pending:
            self.dropped += 1
            self._log().error(
                "key-value write refused: too many writes already waiting",
                key=key,
                pending=self.pending,
                dropped=self.dropped,
            )
            return False
        if write.replace:
            self._pending[key] = [write]  # a put supersedes whatever waits for its key
        else:
            self._pending.setdefault(key, []).append(write)
        self._report()
        if self._retry is None or self._retry.done():
            self._retry = asyncio.get_running_loop().create_task(self._retry_loop())
        return False

    async def _apply(self, bucket: Bucket, key: str, write: _Write) -> bool:
        """Store one write; False if its update function failed (it is dropped, logged).

        Any error of the store propagates; ``write.attempt`` then keeps the try to repeat.
        """
        for _ in range(_CAS_ROUNDS):
            if write.attempt is None:
                rev: int | None = None
                old: bytes | None = None
                if not write.replace:
                    old, rev, _ = await self._read(bucket, key)
                try:
                    value = write.update(old)
                except Exception:
                    self._log().exception("key-value update failed: write dropped", key=key)
                    return False
                write.attempt = (value, rev, uuid.uuid4().hex)
            value, rev, msg_id = write.attempt
            headers = {_MSG_ID: msg_id}
            if rev is not None:
                headers[_EXPECTED_LAST] = str(rev)
            try:
                await bucket.js.publish(bucket.subject(key), value, headers=headers)
                return True
            except Exception as exc:
                if getattr(exc, "err_code", None) not in _WRONG_LAST_SEQUENCE:
                    raise
            # Somebody wrote first, or an earlier try of ours landed and got no answer.
            _, _, last_id = await self._read(bucket, key)
            if last_id == msg_id:
                return True
            write.attempt = None
            await asyncio.sleep(0.01)
        raise StoreError(f"could not update {key!r}: too many concurrent writes")

    async def _read(self, bucket: Bucket, key: str) -> tuple[bytes | None, int, str | None]:
        """``(value or None, revision or 0, message id)`` of the latest entry at ``key``."""
        try:
            msg = await bucket.js.get_last_msg(bucket.stream, bucket.subject(key))
        except NotFoundError as exc:
            if exc.err_code != _NO_MESSAGE:  # no stream: the store is not there
                raise
            return None, 0, None
        headers = msg.headers or {}
        value = None if headers.get(_KV_OPERATION) else (msg.data or b"")
        return value, msg.seq or 0, headers.get(_MSG_ID)

    # -- retrying ----------------------------------------------------------------------------

    async def _retry_loop(self) -> None:
        delay = self.retry_initial
        while self._pending:
            await asyncio.sleep(delay * random.uniform(0.75, 1.0))  # jitter only: not for security
            if await self._store_pending():
                break
            delay = min(delay * 2, self.retry_max)

    async def _store_pending(self) -> bool:
        """Store waiting writes in order; True when none is left, False at the first failure."""
        async with self._draining:
            return await self._store_pending_locked()

    async def _store_pending_locked(self) -> bool:
        if not self._pending:
            return True
        try:
            bucket = await self._bucket()
            while self._pending:
                key, writes = next(iter(self._pending.items()))
                write = writes[0]
                await self._apply(bucket, key, write)
                if writes and writes[0] is write:  # (a put may have replaced the list)
                    writes.pop(0)
                if not writes and self._pending.get(key) is writes:
                    del self._pending[key]
        except Exception as exc:
            self._failed(exc)
            self._report()
            return False
        self._log().info("key-value writes stored again: the store is back")
        self._health.ok(source=_SOURCE)
        return True

    def _failed(self, exc: Exception) -> None:
        self._last_error = str(exc) or repr(exc)

    def _report(self) -> None:
        n = self.pending
        self._health.degrade(
            f"{n} key-value write{'' if n == 1 else 's'} not stored yet, retrying "
            f"(last error: {self._last_error})",
            source=_SOURCE,
        )
