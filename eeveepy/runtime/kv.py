"""An operator's JetStream key-value bucket, opened (or created) on first use.

The bucket is named by :func:`~eeveepy.bus.names.kv_bucket_name`; :class:`KvAccess` opens it
once per connection, for ``op.kv()`` and for the retrying writes of ``op.store``
(:mod:`eeveepy.runtime.kvstore`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nats.aio.client import Client as NatsClient
from nats.js.errors import BadRequestError, BucketNotFoundError
from nats.js.kv import KeyValue

from eeveepy.bus.names import kv_bucket_name
from eeveepy.errors import BusError, EeveeError, OperatorError
from eeveepy.runtime.kvstore import Bucket

__all__ = ["BUCKET_WAIT", "KvAccess", "open_bucket"]


BUCKET_WAIT = 15.0
"""Seconds an operator with a bus user of its own (which may not make streams) keeps looking its
bucket up before it tries to make it itself: the embedded server's supervisor makes it when it
is first looked up (see :mod:`eeveepy.bus.buckets`), after those of other operators starting
too; on other buses it made it before the operator started."""


async def open_bucket(nc: NatsClient, bucket: str, wait: float = 0.0) -> KeyValue:
    """The KV bucket ``bucket``, created when missing (after looking it up again for ``wait``
    seconds, while someone else makes it); :class:`BusError` when impossible."""
    js = nc.jetstream()
    loop = asyncio.get_running_loop()
    deadline, pause = loop.time() + wait, 0.02
    try:
        while True:
            try:
                return await js.key_value(bucket)
            except BucketNotFoundError:
                left = deadline - loop.time()
                if left <= 0:
                    break
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.5)
        try:
            return await js.create_key_value(bucket=bucket)
        except BadRequestError:  # created meanwhile by another replica
            return await js.key_value(bucket)
    except EeveeError:
        raise
    except Exception as exc:
        raise BusError(f"cannot open the key-value bucket {bucket!r}: {exc!r}") from None


class KvAccess:
    """The bucket of one operator over its current connection.

    ``connection`` gives the connection (None before connecting or after closing),
    ``operator_id`` the id and ``prefix`` the subject prefix, ``supervised`` whether the
    operator has a bus user of its own, so that its supervisor makes the bucket (then it is
    waited for, :data:`BUCKET_WAIT`); they are asked at each use, as they are known only once
    the operator serves.
    """

    def __init__(
        self,
        connection: Callable[[], NatsClient | None],
        operator_id: Callable[[], str],
        prefix: Callable[[], str],
        supervised: Callable[[], bool] = lambda: False,
    ) -> None:
        self._connection = connection
        self._operator_id = operator_id
        self._prefix = prefix
        self._supervised = supervised
        self._opened: tuple[NatsClient, KeyValue] | None = None
        self._lock = asyncio.Lock()

    def reset(self) -> None:
        """Forget the bucket opened on an earlier connection (and the event loop it ran on)."""
        self._opened = None
        self._lock = asyncio.Lock()

    async def key_value(self) -> KeyValue:
        """The bucket (see :meth:`Operator.kv <eeveepy.runtime.operator.Operator.kv>`)."""
        nc = self._connection()
        if nc is None:
            raise OperatorError("the bus is not connected yet; use kv() from on_start on")
        opened = self._opened
        if opened is not None and opened[0] is nc:
            return opened[1]
        async with self._lock:
            opened = self._opened
            if opened is None or opened[0] is not nc:
                wait = BUCKET_WAIT if self._supervised() else 0.0
                opened = self._opened = (nc, await open_bucket(nc, self.bucket_name, wait))
        return opened[1]

    async def bucket(self) -> Bucket:
        """The bucket for :class:`~eeveepy.runtime.kvstore.KvStore`'s writes."""
        await self.key_value()  # opens (or creates) it
        nc = self._connection()
        if nc is None:
            raise OperatorError("the bus is not connected")
        return Bucket(nc.jetstream(), self.bucket_name)

    @property
    def bucket_name(self) -> str:
        """The bucket's name."""
        return kv_bucket_name(self._operator_id(), self._prefix())
