"""Everything eeveepy takes from nats-py beyond its public API, and its errors translated.

nats-py is pinned (``pyproject.toml``) because of this module alone. It relies on three
internals of nats-py 2.16:

- ``Client._process_msg(sid, subject, reply, data, headers)``, the coroutine nats-py's
  protocol parser calls for each received message: :class:`EeveeClient` overrides it to hand
  eeveepy's own subscriptions their raw bytes (the fast path);
- ``Subscription._id``, the subscription id (sid) that call names;
- ``Client.stats["in_msgs"]`` / ``["in_bytes"]``, kept up to date on the fast path too.

:func:`incompatibilities` checks them; ``tests/test_natsadapter.py`` runs it and the fast path
against a real nats-server, so an upgrade of nats-py that changes them fails there, by name,
instead of as lost messages.

The other half is :func:`bus_error`: nats-py's exceptions on publishing and requesting (a
closed connection, a full outgoing buffer, a refused subject...) as
:class:`~eeveepy.errors.BusError` subclasses, so ``except EeveeError`` catches them.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from collections.abc import Callable

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription as NatsSubscription

from eeveepy.errors import (
    BadBusSubjectError,
    BusClosedError,
    BusError,
    NoRespondersError,
    OutboundBufferFullError,
    RequestTimeoutError,
)

__all__ = [
    "EeveeClient",
    "FastHandler",
    "add_fast_path",
    "add_header_path",
    "bus_error",
    "incompatibilities",
    "nats_py_version",
    "remove_fast_path",
]

FastHandler = Callable[[bytes, bytes, bytes], None]
"""Takes one received message as ``(subject, reply, payload)`` bytes; must not block."""

HeaderHandler = Callable[[bytes, bytes, bytes, bytes], None]
"""Takes one received message as ``(subject, reply, payload, raw headers)`` bytes."""

_PROCESS_MSG_PARAMS = ["self", "sid", "subject", "reply", "data", "headers"]


class EeveeClient(NatsClient):
    """nats-py's client with a lean delivery path for eeveepy's own subscriptions.

    For a subscription given a fast path (:func:`add_fast_path`), a received message goes
    straight from the protocol parser to its handler as ``(subject, reply, payload)`` bytes:
    no ``Msg`` object, no header parsing, no ``asyncio.Queue``. That is most of nats-py's own
    per-message cost, and what pays for validating every envelope. Everything else
    (JetStream, requests, plain subscriptions) takes nats-py's usual path.
    """

    def __init__(self) -> None:
        super().__init__()
        self._fast_paths: dict[int, FastHandler] = {}
        self._header_paths: dict[int, HeaderHandler] = {}

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        fast = self._fast_paths.get(sid)
        if fast is None:
            with_headers = self._header_paths.get(sid)
            if with_headers is None:
                await super()._process_msg(sid, subject, reply, data, headers)
                return
            self.stats["in_msgs"] += 1
            self.stats["in_bytes"] += len(data)
            with_headers(subject, reply, data, headers or b"")
            return
        stats = self.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        fast(subject, reply, data)


def add_fast_path(nc: NatsClient, sub: NatsSubscription, handler: FastHandler) -> bool:
    """Deliver what ``sub`` receives to ``handler`` from now on; False when ``nc`` cannot.

    Until then (and without it) the subscription's own callback gets the messages.
    """
    if not isinstance(nc, EeveeClient):
        return False
    nc._fast_paths[sub._id] = handler
    return True


def add_header_path(nc: NatsClient, sub: NatsSubscription, handler: HeaderHandler) -> bool:
    """:func:`add_fast_path` for a handler that also needs the message's raw header block
    (``NATS/1.0\\r\\nName: value\\r\\n...``, or empty); False when ``nc`` cannot."""
    if not isinstance(nc, EeveeClient):
        return False
    nc._header_paths[sub._id] = handler
    return True


def remove_fast_path(nc: NatsClient, sub: NatsSubscription) -> None:
    """Forget the fast path of ``sub`` (before unsubscribing it)."""
    if isinstance(nc, EeveeClient):
        nc._fast_paths.pop(sub._id, None)
        nc._header_paths.pop(sub._id, None)


def bus_error(exc: nats.errors.Error, subject: str) -> BusError:
    """nats-py's ``exc``, raised on sending to ``subject``, as a :class:`BusError`."""
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, nats.errors.ConnectionClosedError | nats.errors.ConnectionDrainingError):
        return BusClosedError(
            f"cannot send to {subject}: the bus connection is closed", subject=subject
        )
    if isinstance(exc, nats.errors.OutboundBufferLimitError):
        return OutboundBufferFullError(
            f"cannot send to {subject}: the bus is away and the outgoing buffer is full",
            subject=subject,
        )
    if isinstance(exc, nats.errors.BadSubjectError):
        return BadBusSubjectError(
            f"the bus client refused the subject {subject!r}", subject=subject
        )
    if isinstance(exc, nats.errors.NoRespondersError):
        return NoRespondersError(f"nobody answers on {subject}", subject=subject)
    if isinstance(exc, nats.errors.TimeoutError):
        return RequestTimeoutError(f"no reply on {subject} in time", subject=subject)
    return BusError(f"cannot send to {subject}: {reason}", subject=subject)


def nats_py_version() -> str:
    """The installed nats-py's version."""
    return importlib.metadata.version("nats-py")


def incompatibilities() -> list[str]:
    """What this module relies on and the installed nats-py no longer offers; empty if all."""
    found: list[str] = []
    process_msg = getattr(NatsClient, "_process_msg", None)
    if process_msg is None or not inspect.iscoroutinefunction(process_msg):
        found.append("Client._process_msg is gone or no longer a coroutine function")
    elif list(inspect.signature(process_msg).parameters) != _PROCESS_MSG_PARAMS:
        found.append(
            f"Client._process_msg{inspect.signature(process_msg)} no longer takes "
            f"({', '.join(_PROCESS_MSG_PARAMS[1:])})"
        )
    nc = NatsClient()
    if getattr(NatsSubscription(nc, 7), "_id", None) != 7:
        found.append("Subscription(conn, id) no longer keeps its id as Subscription._id")
    stats = nc.stats
    for key in ("in_msgs", "in_bytes"):
        if key not in stats:
            found.append(f"Client.stats has no {key!r}")
    return found
