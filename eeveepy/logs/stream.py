"""The log history stream: ``<PREFIX>_LOGS`` keeps ``{p}.log.>`` for a while.

The supervisor creates it (:func:`ensure_log_stream`) before it ships a record; ``eevee logs``
(:mod:`eeveepy.logs.history`) and the logging operator (``operators.logging``) read it.
"""

from __future__ import annotations

import asyncio

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from eeveepy.bus.names import log_stream_name as stream_name
from eeveepy.errors import BusError

__all__ = ["ensure_log_stream", "stream_name"]


async def ensure_log_stream(
    js: JetStreamContext,
    prefix: str,
    *,
    max_age: float,
    max_bytes: int,
    timeout: float = 10.0,
) -> None:
    """Create the log stream of ``prefix``, or bring an existing one's limits up to date.

    The stream keeps ``{p}.log.>`` in files, at most ``max_age`` seconds and ``max_bytes``
    bytes, discarding the oldest. Bounded by ``timeout``; raises :class:`BusError` saying why
    on failure (JetStream disabled, subjects taken by another stream, ...).
    """
    name = stream_name(prefix)
    subjects = [f"{prefix}.log.>"]
    if max_age <= 0 or max_bytes <= 0:
        raise BusError(f"log stream {name}: max_age and max_bytes must be positive")
    try:
        async with asyncio.timeout(timeout):
            try:
                info = await js.stream_info(name)
            except NotFoundError:
                try:
                    await js.add_stream(
                        StreamConfig(
                            name=name,
                            description=f"log history of {prefix}",
                            subjects=subjects,
                            retention=RetentionPolicy.LIMITS,
                            storage=StorageType.FILE,
                            discard=DiscardPolicy.OLD,
                            max_age=max_age,
                            max_bytes=max_bytes,
                            duplicate_window=min(120.0, max_age),
                            num_replicas=1,
                        )
                    )
                    return
                except BadRequestError as exc:
                    if exc.err_code != 10058:  # not "stream name already in use"
                        raise
                info = await js.stream_info(name)
            cfg = info.config
            if (
                cfg.subjects == subjects
                and cfg.max_bytes == max_bytes
                and cfg.max_age is not None
                and abs(cfg.max_age - max_age) < 1e-6
                and cfg.discard == DiscardPolicy.OLD
            ):
                return
            await js.update_stream(
                cfg.evolve(
                    subjects=subjects,
                    max_age=max_age,
                    max_bytes=max_bytes,
                    discard=DiscardPolicy.OLD,
                    # The server refuses a duplicates window longer than max_age.
                    duplicate_window=min(cfg.duplicate_window or max_age, max_age),
                )
            )
    except TimeoutError:
        raise BusError(
            f"log stream {name}: no answer from JetStream within {timeout:g} s"
        ) from None
    except ServiceUnavailableError:
        raise BusError(f"log stream {name}: JetStream is not available on this server") from None
    except (nats.errors.Error, OSError) as exc:
        reason = getattr(exc, "description", None) or str(exc) or type(exc).__name__
        raise BusError(f"cannot create or update the log stream {name}: {reason}") from None
