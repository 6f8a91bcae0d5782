"""Everything eeveepy takes from nats-py beyond its public API, and its errors translated.

nats-py is pinned (``pyproject.toml``) because of this module alone. It relies on three
internals of nats-py 2.16:

- ``Client._process_msg(sid, subject, reply, data, headers)``, the coroutine nats-py's
  protocol parser calls for each received message: :class:`EeveeClient` overrides it to hand
  eeveepy's own subscriptions their raw bytes (the fast path);
- ``Subscription._id``, the subscription id (sid) that call names;
- ``Client.stats["in_msgs"]`` / ``["in_bytes"]``, kept up to date on the fast path too;
- ``Client._ps``, the client's protocol parser, which :class:`EeveeClient` replaces with a
  :class:`~eeveepy.bus.natsparser.FastParser`, and of nats-py's ``Parser`` what that one
  uses: its ``buf``, ``state`` and ``needed``, and its reading of ``MSG`` lines;
- ``Client._send_publish(subject, reply, payload, payload_size, headers)``, which
  :class:`EeveeClient` overrides to encode headers cheaply and to write what was published
  once per turn of the event loop, and what it uses for that: ``Client._send_command``
  (queues a command in ``Client._pending``, counted in ``Client._pending_data_size``),
  ``Client._transport.writelines`` and ``Client._flush_queue`` (nats-py's own flusher, left
  to the rest: subscriptions, pings, reconnects);
- ``Client.publish(subject, payload, reply, headers)``, which it overrides for a plain
  publish on a connected client, doing what nats-py's checks and ``_send_command`` do with
  ``Client._status`` (``Client.CONNECTED``), ``_max_payload``, ``_max_pending_size``,
  ``_skip_subject_validation`` and ``_flush_pending(force_flush=True)``;

:func:`incompatibilities` checks them; ``tests/test_natsadapter.py`` runs it and the fast path
against a real nats-server, so an upgrade of nats-py that changes them fails there, by name,
instead of as lost messages.

The other half is :func:`bus_error`: nats-py's exceptions on publishing and requesting (a
closed connection, a full outgoing buffer, a refused subject...) as
:class:`~eeveepy.errors.BusError` subclasses, so ``except EeveeError`` catches them.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import re
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription as NatsSubscription
from nats.protocol.parser import Parser

from eeveepy.bus.natsparser import FastParser, parser_problems
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
_PUBLISH_PARAMS = ["self", "subject", "payload", "reply", "headers"]
_SEND_PUBLISH_PARAMS = ["self", "subject", "reply", "payload", "payload_size", "headers"]
_HEADER_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""What a header name may be (an RFC 7230 token), as nats-py checks it."""
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
_KEYS_KEPT = 256
"""Header names (and subjects) whose checked, encoded form a client remembers."""
_SUBJECT_INVALID = re.compile(r"[ \t\r\n]")
"""What a subject may not contain, as nats-py checks it on publishing."""
_CONNECTED = NatsClient.CONNECTED


class _Publishing(NatsClient):
    """nats-py's client with a cheaper publishing path (see :meth:`_send_publish`)."""

    def __init__(self) -> None:
        super().__init__()
        self._header_keys: dict[str, str] = {}
        self._pub_heads: dict[str, bytes] = {}
        self._write_soon: asyncio.Handle | None = None
        self._eevee_loop: asyncio.AbstractEventLoop | None = None

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        reply: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        """nats-py's, in one call for the plain publish of a connected client.

        nats-py checks the subject with a regular expression, the connection's state through
        three properties and the size, then awaits two more coroutines to queue the command.
        A publish without reply or headers, on a connected client, of a payload within the
        server's limit (every other one is nats-py's) does that here: its subject checked
        and encoded once (``PUB <subject>`` is remembered), refused as nats-py refuses it.
        """
        if (
            reply
            or headers is not None
            or self._status != _CONNECTED
            or len(payload) > self._max_payload
        ):
            await super().publish(subject, payload, reply, headers)
            return
        heads = self._pub_heads
        head = heads.get(subject)
        if head is None:
            if not subject or (
                not self._skip_subject_validation and _SUBJECT_INVALID.search(subject)
            ):
                raise nats.errors.BadSubjectError
            if len(heads) >= _KEYS_KEPT:
                heads.clear()
            head = heads[subject] = b"PUB %s  " % subject.encode()
        size = len(payload)
        cmd = b"%s%d\r\n%s\r\n" % (head, size, payload)
        stats = self.stats
        stats["out_msgs"] += 1
        stats["out_bytes"] += size
        self._pending.append(cmd)
        self._pending_data_size += len(cmd)
        if 0 < self._max_pending_size < self._pending_data_size:
            await self._flush_pending(force_flush=True)  # (as nats-py's _send_command)
        if self._write_soon is None:
            self._write_at_end_of_turn()

    async def _send_publish(
        self,
        subject: str,
        reply: str,
        payload: bytes,
        payload_size: int,
        headers: dict[str, Any] | None,
    ) -> None:
        """nats-py's, with cheaper headers and one socket write per turn of the loop.

        nats-py kicks its flusher task for each publish that finds it idle, and the flusher
        writes once per kick: publishes made by several tasks in one turn of the loop go out
        as several writes (a system call each). Here a publish only queues its command; one
        callback, scheduled by the first publish of the turn, writes all of them once the
        loop's ready callbacks have run.
        """
        if not subject:
            raise nats.errors.BadSubjectError
        if headers is None:
            cmd = b"PUB %s %s %d\r\n%s\r\n" % (
                subject.encode(),
                reply.encode(),
                payload_size,
                payload,
            )
        else:
            head = self._header_block(headers)
            cmd = b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
                subject.encode(),
                reply.encode(),
                len(head),
                len(head) + payload_size,
                head,
                payload,
            )
        stats = self.stats
        stats["out_msgs"] += 1
        stats["out_bytes"] += payload_size
        await self._send_command(cmd)
        if self._write_soon is None:
            self._write_at_end_of_turn()

    def _write_at_end_of_turn(self) -> None:
        """Have :meth:`_write_pending` called once this turn's ready callbacks have run."""
        loop = self._eevee_loop
        if loop is None:  # (asyncio.get_running_loop() is a getpid() call on Python 3.11)
            loop = self._eevee_loop = asyncio.get_running_loop()
        self._write_soon = loop.call_soon(self._write_pending)

    def _header_block(self, headers: dict[str, Any]) -> bytes:
        """The ``NATS/1.0`` header block, as nats-py makes it: names checked (a bad one
        raises ``BadHeaderError``), values trimmed, CR and LF in them made spaces."""
        keys = self._header_keys
        lines = ["NATS/1.0\r\n"]
        for k, v in headers.items():
            key = keys.get(k)
            if key is None:
                key = k.strip()
                if key and not _HEADER_KEY.fullmatch(key):
                    raise nats.errors.BadHeaderError(key)
                if len(keys) >= _KEYS_KEPT:
                    keys.clear()
                keys[k] = key
            if not key:
                continue  # nats-py leaves empty names out
            value = v.strip()
            if "\r" in value or "\n" in value:
                value = value.translate(_NEWLINES)
            lines.append(f"{key}: {value}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode()

    def _write_pending(self) -> None:
        """Write every command queued so far in one go (the callback of this turn)."""
        self._write_soon = None
        if not self._pending_data_size or not self.is_connected:
            return  # written already, or kept for the reconnect (nats-py sends it then)
        flush_queue, transport = self._flush_queue, self._transport
        if flush_queue is None or transport is None or not flush_queue.empty():
            return  # nats-py's flusher was kicked: it writes them
        try:
            transport.writelines(self._pending)
        except Exception:
            # Leave the commands to nats-py's flusher: it handles a broken connection.
            flush_queue.put_nowait(asyncio.get_running_loop().create_future())
            return
        self._pending = []
        self._pending_data_size = 0


class EeveeClient(_Publishing):
    """nats-py's client with a lean delivery path for eeveepy's own subscriptions.

    For a subscription given a fast path (:func:`add_fast_path`), a received message goes
    straight from the protocol parser to its handler as ``(subject, reply, payload)`` bytes:
    no ``Msg`` object, no header parsing, no ``asyncio.Queue``. That is most of nats-py's own
    per-message cost, and what pays for validating every envelope. Everything else
    (JetStream, requests, plain subscriptions) takes nats-py's usual path. Publishing is
    :class:`_Publishing`'s.
    """

    def __init__(self) -> None:
        super().__init__()
        self._fast_paths: dict[int, FastHandler] = {}
        self._header_paths: dict[int, HeaderHandler] = {}
        self._ps = FastParser(self)

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


def _coroutine_problem(name: str, params: list[str]) -> str:
    """What is wrong with ``Client.<name>``, a coroutine function taking ``params`` ("" if
    nothing)."""
    method = getattr(NatsClient, name, None)
    if method is None or not inspect.iscoroutinefunction(method):
        return f"Client.{name} is gone or no longer a coroutine function"
    if list(inspect.signature(method).parameters) != params:
        return f"Client.{name}{inspect.signature(method)} no longer takes ({', '.join(params[1:])})"
    return ""


def incompatibilities() -> list[str]:
    """What this module relies on and the installed nats-py no longer offers; empty if all."""
    found = [
        problem
        for name, params in (
            ("_process_msg", _PROCESS_MSG_PARAMS),
            ("_send_publish", _SEND_PUBLISH_PARAMS),
            ("publish", _PUBLISH_PARAMS),
            ("_flush_pending", ["self", "force_flush"]),
        )
        if (problem := _coroutine_problem(name, params))
    ]
    nc = NatsClient()
    for name in (
        "_pending",
        "_pending_data_size",
        "_flush_queue",
        "_transport",
        "_status",
        "_max_payload",
        "_max_pending_size",
        "_skip_subject_validation",
    ):
        if not hasattr(nc, name):
            found.append(f"Client has no {name}")
    if not inspect.iscoroutinefunction(getattr(NatsClient, "_send_command", None)):
        found.append("Client._send_command is gone or no longer a coroutine function")
    if getattr(NatsSubscription(nc, 7), "_id", None) != 7:
        found.append("Subscription(conn, id) no longer keeps its id as Subscription._id")
    if not isinstance(getattr(nc, "_ps", None), Parser):
        found.append("Client._ps is no longer the client's protocol parser")
    found.extend(parser_problems())
    stats = nc.stats
    for key in ("in_msgs", "in_bytes"):
        if key not in stats:
            found.append(f"Client.stats has no {key!r}")
    return found
