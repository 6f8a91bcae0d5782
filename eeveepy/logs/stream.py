"""The log history stream: ``<PREFIX>_LOGS`` keeps ``{p}.log.>`` for a while.

The supervisor creates it (:func:`ensure_log_stream`) before it ships a record; ``eevee logs``
(:mod:`eeveepy.logs.history`) and the logging operator (``operators.logging``) read it.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from eeveepy.bus.jetstream import ensure_stream
from eeveepy.bus.names import log_stream_name as stream_name
from eeveepy.errors import BusError

__all__ = ["ensure_log_stream", "stream_name"]


async def ensure_log_stream(
    js: JetStreamContext,
    prefix: str,
    *,
    max_age: float,
    max_bytes: int,
    replicas: int = 1,
    timeout: float = 10.0,
) -> None:
    """Create the log stream of ``prefix``, or bring an existing one's limits up to date.

    The stream keeps ``{p}.log.>`` in files, at most ``max_age`` seconds and ``max_bytes``
    bytes, discarding the oldest, in ``replicas`` copies. Bounded by ``timeout``; raises
    :class:`BusError` saying why on failure (JetStream disabled, subjects taken by another
    stream, ...).
    """
    name = stream_name(prefix)
    if max_age <= 0 or max_bytes <= 0:
        raise BusError(f"log stream {name}: max_age and max_bytes must be positive")
    config = StreamConfig(
        name=name,
        description=f"log history of {prefix}",
        subjects=[f"{prefix}.log.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=max_age,
        max_msgs=-1,
        max_bytes=max_bytes,
        duplicate_window=min(120.0, max_age),
        num_replicas=replicas,
    )
    await ensure_stream(js, config, timeout=timeout)
