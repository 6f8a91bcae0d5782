"""Operators' key-value buckets, made by the supervisor before the operators start.

Making a bucket is making a JetStream stream, and whoever may make a stream chooses the
subjects it captures: an operator allowed to create its own bucket could capture other
parties' subjects in it (replies, logs) and read them back. So, with bus permissions, only
the supervisor creates buckets (:func:`ensure_buckets`, the same configuration the runtime
would use), and an operator may only use its own (see :mod:`eeveepy.bus.permissions`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError
from structlog.typing import FilteringBoundLogger

from eeveepy.bus.names import kv_bucket_name

__all__ = ["ensure_buckets"]


async def ensure_buckets(
    js: JetStreamContext, operator_ids: Iterable[str], log: FilteringBoundLogger
) -> None:
    """Make sure each operator of ``operator_ids`` has its bucket, all at once (hundreds of
    operators, one after the other, held up the start by a round trip or two each); failures
    are logged (the operator then says so itself when it needs the bucket)."""
    await asyncio.gather(*(_ensure(js, op_id, log) for op_id in operator_ids))


async def _ensure(js: JetStreamContext, op_id: str, log: FilteringBoundLogger) -> None:
    bucket = kv_bucket_name(op_id)
    try:
        try:
            await js.key_value(bucket)
        except NotFoundError:
            await js.create_key_value(bucket=bucket)
    except BadRequestError:  # made meanwhile (another supervisor, the operator itself)
        return
    except Exception as exc:  # JetStream off or unreachable: nothing to do about it now
        log.warning("cannot make an operator's key-value bucket", bucket=bucket, error=str(exc))
