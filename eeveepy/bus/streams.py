"""The JetStream streams that keep chat traffic until it has been dealt with.

Their names come from :mod:`eeveepy.bus.names`.

``{p}.chat.in.>`` is kept in the work-queue stream ``<PREFIX>_CHAT_IN`` (``eevee`` ->
``EEVEE_CHAT_IN``): a connector publishes each chat line as a JetStream publish and knows it
is stored once the server acknowledges it; the router reads the stream through a durable
consumer and acknowledges a line only once it has been answered (or its failure reported), so
a router, command operator or bus that dies mid-burst loses nothing (see "Delivery" in
docs/protocol.md). Plain subscribers of ``chat.in`` (seen, karma, loggers) are not affected:
the stream is an extra listener on the same subjects.

``{p}.chat.out.>`` is kept the same way in ``<PREFIX>_CHAT_OUT`` until the connector of the
network has sent it: a connector that dies sends, once restarted, what was said meanwhile.

The supervisor creates both streams at start, with ``[bus] replicas`` copies (3 on a
cluster); acknowledged messages leave them, and what
nobody consumes is dropped after ``max_age`` or beyond ``max_msgs`` / ``max_bytes`` (oldest
first).
"""

from __future__ import annotations

from typing import Any

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext

from eeveepy.bus.jetstream import ensure_stream
from eeveepy.bus.names import chat_in_stream_name, chat_out_stream_name

CHAT_MAX_AGE = 600.0
"""Seconds an unconsumed chat message is kept (its consumer was down longer: it is dropped)."""
CHAT_MAX_MSGS = 100_000
CHAT_MAX_BYTES = 64 * 1024 * 1024
DUPLICATE_WINDOW = 120.0
"""Seconds in which a re-sent line (same ``Nats-Msg-Id``) is recognised and stored once."""


async def ensure_chat_streams(
    js: JetStreamContext, prefix: str, *, replicas: int = 1
) -> tuple[str, str]:
    """Create (or update) both chat streams of ``prefix``; their names, input first."""
    return (
        await ensure_chat_in_stream(js, prefix, replicas=replicas),
        await ensure_chat_out_stream(js, prefix, replicas=replicas),
    )


async def ensure_chat_in_stream(js: JetStreamContext, prefix: str, **limits: Any) -> str:
    """Create the chat input stream of ``prefix`` (or bring its limits up to date); its name."""
    name = chat_in_stream_name(prefix)
    what = f"chat input of {prefix} until the router has handled it"
    return await _ensure(js, name, f"{prefix}.chat.in.>", what, **limits)


async def ensure_chat_out_stream(js: JetStreamContext, prefix: str, **limits: Any) -> str:
    """Create the chat output stream of ``prefix`` (or bring its limits up to date); its name."""
    name = chat_out_stream_name(prefix)
    what = f"chat output of {prefix} until its connector has sent it"
    return await _ensure(js, name, f"{prefix}.chat.out.>", what, **limits)


async def _ensure(
    js: JetStreamContext,
    name: str,
    subject: str,
    description: str,
    *,
    max_age: float = CHAT_MAX_AGE,
    max_msgs: int = CHAT_MAX_MSGS,
    max_bytes: int = CHAT_MAX_BYTES,
    replicas: int = 1,
    timeout: float = 10.0,
) -> str:
    """Create the work-queue stream ``name`` on ``subject``, or bring its limits up to date
    (see :func:`~eeveepy.bus.jetstream.ensure_stream`)."""
    config = StreamConfig(
        name=name,
        description=description,
        subjects=[subject],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=max_age,
        max_msgs=max_msgs,
        max_bytes=max_bytes,
        duplicate_window=min(DUPLICATE_WINDOW, max_age),
        num_replicas=replicas,
    )
    return await ensure_stream(js, config, timeout=timeout)
