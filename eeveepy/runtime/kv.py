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

__all__ = ["KvAccess", "open_bucket"]


async def open_bucket(nc: NatsClient, bucket: str) -> KeyValue:
    """The KV bucket ``bucket``, created when missing; :class:`BusError` when impossible."""
    js = nc.jetstream()
    try:
        try:
            return await js.key_value(bucket)
        except BucketNotFoundError:
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
    ``operator_id`` the id and ``prefix`` the subject prefix; they are asked at each use, as
    they are known only once the operator serves.
    """

    def __init__(
        self,
        connection: Callable[[], NatsClient | None],
        operator_id: Callable[[], str],
        prefix: Callable[[], str],
    ) -> None:
        self._connection = connection
        self._operator_id = operator_id
        self._prefix = prefix
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
                opened = self._opened = (nc, await open_bucket(nc, self.bucket_name))
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
