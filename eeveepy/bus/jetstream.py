"""Making sure of a JetStream stream: one helper for the chat streams and the log history.

:func:`ensure_stream` creates a stream, or brings an existing one's subjects, limits and
replica count up to date, bounded in time, and turns every failure into a
:class:`~eeveepy.errors.BusError` that says what to do. Replicas above 1 need a clustered
JetStream (a NATS cluster): a single server refuses them, which the error says.
"""

from __future__ import annotations

import asyncio

import nats.errors
from nats.js.api import StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, BadRequestError, NotFoundError, ServiceUnavailableError

from eeveepy.errors import BusError

__all__ = ["ensure_stream", "explain"]

_NAME_IN_USE = 10058
_REPLICAS_NOT_SUPPORTED = 10074  # "replicas > 1 not supported in non-clustered mode"
_INSUFFICIENT_RESOURCES = 10023  # fewer servers than replicas, among others


async def ensure_stream(js: JetStreamContext, want: StreamConfig, *, timeout: float = 10.0) -> str:
    """Create ``want`` or update the existing stream of its name to its subjects, limits,
    discard policy and replica count; its name. Raises :class:`BusError` saying why."""
    name = want.name or ""
    try:
        async with asyncio.timeout(timeout):
            try:
                info = await js.stream_info(name)
            except NotFoundError:
                try:
                    await js.add_stream(want)
                    return name
                except BadRequestError as exc:
                    if exc.err_code != _NAME_IN_USE:  # made meanwhile (another supervisor)
                        raise
                info = await js.stream_info(name)
            have = info.config
            if _differs(have, want):
                max_age = want.max_age or 0.0
                window = have.duplicate_window or want.duplicate_window or max_age
                await js.update_stream(
                    have.evolve(
                        subjects=want.subjects,
                        max_age=max_age,
                        max_msgs=want.max_msgs,
                        max_bytes=want.max_bytes,
                        discard=want.discard,
                        num_replicas=want.num_replicas,
                        # The server refuses a duplicates window longer than max_age.
                        duplicate_window=min(window, max_age),
                    )
                )
    except TimeoutError:
        raise BusError(f"stream {name}: no answer from JetStream within {timeout:g} s") from None
    except ServiceUnavailableError:
        raise BusError(f"stream {name}: JetStream is not available on this server") from None
    except (nats.errors.Error, OSError) as exc:
        raise BusError(f"stream {name}: {explain(exc, want.num_replicas)}") from None
    return name


def _differs(have: StreamConfig, want: StreamConfig) -> bool:
    return (
        have.subjects != want.subjects
        or have.max_msgs != want.max_msgs
        or have.max_bytes != want.max_bytes
        or have.discard != want.discard
        or (have.num_replicas or 1) != (want.num_replicas or 1)
        or have.max_age is None
        or abs(have.max_age - (want.max_age or 0.0)) > 1e-6
    )


def explain(exc: Exception, replicas: int | None) -> str:
    """What a JetStream error means for a stream or bucket of ``replicas`` replicas."""
    reason = getattr(exc, "description", None) or str(exc) or type(exc).__name__
    code = exc.err_code if isinstance(exc, APIError) else None
    if code == _REPLICAS_NOT_SUPPORTED or (code == _INSUFFICIENT_RESOURCES and (replicas or 1) > 1):
        return (
            f"{reason}: [bus] replicas = {replicas} needs a NATS cluster with JetStream on at "
            "least that many servers; set [bus] replicas = 1 for a single server"
        )
    return reason
