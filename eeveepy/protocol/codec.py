"""Envelope encoding and decoding, kept cheap because it sits on every message's path.

Encoding does not build an :class:`~eeveepy.models.Envelope` model: the body is already a
validated pydantic model, so its JSON is produced by pydantic's serializer and the envelope
around it is assembled from pre-encoded pieces. Decoding validates the whole payload in one
``model_validate_json`` call (pydantic-core, no intermediate dicts).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError, to_json

from eeveepy.errors import EnvelopeError
from eeveepy.protocol.models import Body, DeadLetter, Envelope

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

B = TypeVar("B", bound=Body)


class IdFactory:
    """Makes ULID-like ids, unique and sortable by creation within a process.

    26 characters: 10 of millisecond time (Crockford base32), 10 of per-process randomness
    (50 bits, so processes do not collide), 6 of a per-process counter (hex digits, a subset of
    the same alphabet). The time part is formatted once per millisecond (:meth:`advance`);
    :class:`EnvelopeEncoder` writes ids from :attr:`prefix_bytes` and :attr:`count` itself.
    """

    __slots__ = ("_prefix", "_rand", "count", "last_ms", "prefix_bytes")

    def __init__(self) -> None:
        self.last_ms = -1
        """The millisecond of the last id."""
        self._prefix = ""
        self.prefix_bytes = b""
        """The first 20 characters of ids in ``last_ms``: its time, then the randomness."""
        self._rand = _b32(int.from_bytes(os.urandom(7), "big") >> 6, 10)
        self.count = 0
        """The counter of the last id (the next is one more, modulo 2**24)."""

    def __call__(self, now: float | None = None) -> str:
        return self.at(int((time.time() if now is None else now) * 1000))

    def at(self, ms: int) -> str:
        """The next id, made in the millisecond ``ms`` (since the epoch)."""
        if ms != self.last_ms:
            self.advance(ms)
        self.count = count = (self.count + 1) & 0xFFFFFF
        return f"{self._prefix}{count:06X}"

    def advance(self, ms: int) -> None:
        """Make the time part of the ids of millisecond ``ms``."""
        self.last_ms = ms
        self._prefix = _b32(ms, 10) + self._rand
        self.prefix_bytes = self._prefix.encode()


def _b32(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def format_timestamp(when: datetime) -> str:
    """RFC 3339 with microseconds and a ``Z``: the envelope's timestamp format."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EnvelopeEncoder:
    """Encodes bodies into envelope JSON for one publisher (its ``source`` is fixed).

    Only what changes is formatted per message: the envelope's start up to the id
    (``{"v":1,"source":...,"kind":...,"id":"``) is made once per kind, the id's time part once
    per millisecond (:meth:`IdFactory.advance`), the timestamp's date and seconds once per
    second; per message, the id's counter, the timestamp's microseconds (one reading of the
    clock for both), the headers and the body.
    """

    __slots__ = ("_head", "_ids", "_kinds", "_second", "_stamp")

    def __init__(self, source: str) -> None:
        self._ids = IdFactory()
        self._head = b'{"v":1,"source":' + json.dumps(source).encode()
        self._kinds: dict[str, bytes] = {}
        self._stamp = b""
        """The timestamp's date and seconds in second ``_second``."""
        self._second = -1

    def new_id(self) -> str:
        """A fresh message id."""
        return self._ids()

    def encode(
        self,
        body: Body,
        headers: dict[str, str] | None = None,
        *,
        msg_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> tuple[str, bytes]:
        """Return ``(id, payload)`` for ``body`` wrapped in an envelope."""
        start = self._kinds.get(body.KIND) or self._start(body)
        ns = time.time_ns()
        ms = ns // 1_000_000
        if msg_id or timestamp:
            return self._encode_given(
                start, body, headers, msg_id or self._ids.at(ms), timestamp, ns
            )
        ids = self._ids  # (written inline: the hot path; the counter new_id() shares)
        if ms != ids.last_ms:
            ids.advance(ms)
        ids.count = count = (ids.count + 1) & 0xFFFFFF
        try:
            payload = b'%s%s%06X","timestamp":"%s.%06dZ","headers":%s,"body":%s}' % (
                start,
                ids.prefix_bytes,
                count,
                self._stamp if ms // 1000 == self._second else self._seconds(ms // 1000),
                ns // 1000 % 1_000_000,
                to_json(headers) if headers else b"{}",  # (17x json.dumps's speed)
                body.__pydantic_serializer__.to_json(body),
            )
        except PydanticSerializationError as exc:
            # A lone surrogate (text decoded with errors="surrogateescape"...) has no UTF-8.
            raise EnvelopeError(f"{body.KIND} cannot be encoded as JSON: {exc}") from None
        at = len(start)
        return payload[at : at + 26].decode(), payload

    def _seconds(self, second: int) -> bytes:
        """The timestamp's date and seconds for ``second`` (formatted once per second)."""
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        return self._stamp

    def _start(self, body: Body) -> bytes:
        """The start of an envelope of ``body``'s kind, up to its id (made once per kind)."""
        kind = body.KIND
        if not kind:
            raise EnvelopeError(f"{type(body).__name__} has no KIND; subclass a protocol body")
        try:
            start = b'%s,"kind":"%s","id":"' % (self._head, kind.encode())
        except UnicodeEncodeError as exc:
            raise EnvelopeError(f"{kind} cannot be encoded as JSON: {exc}") from None
        self._kinds[kind] = start
        return start

    def _encode_given(
        self,
        start: bytes,
        body: Body,
        headers: dict[str, str] | None,
        msg_id: str,
        timestamp: datetime | None,
        ns: int,
    ) -> tuple[str, bytes]:
        """:meth:`encode` with the id or the timestamp given (else the time ``ns``)."""
        if timestamp is None:  # (the ids of replies and stored lines are given: a hot path)
            stamp = b"%s.%06dZ" % (self._seconds(ns // 1_000_000_000), ns // 1000 % 1_000_000)
        else:
            stamp = format_timestamp(timestamp).encode()
        try:
            payload = b'%s%s","timestamp":"%s","headers":%s,"body":%s}' % (
                start,
                msg_id.encode(),
                stamp,
                to_json(headers) if headers else b"{}",
                body.__pydantic_serializer__.to_json(body),
            )
        except (PydanticSerializationError, UnicodeEncodeError) as exc:
            raise EnvelopeError(f"{body.KIND} cannot be encoded as JSON: {exc}") from None
        return msg_id, payload


class EnvelopeDecoder(Generic[B]):
    """Validates payloads as ``Envelope[model]`` and checks the kind."""

    __slots__ = ("_adapter", "_validate", "kind", "model", "validate_json")

    def __init__(self, model: type[B]) -> None:
        self.model = model
        self.kind: str | None = model.KIND
        """The kind a payload must have (:class:`AnyEnvelopeDecoder`'s: None, any)."""
        self._adapter: type[Envelope[B]] = Envelope[model]  # type: ignore[valid-type]
        self._validate = self._adapter.__pydantic_validator__.validate_json
        self.validate_json: Callable[[bytes], Envelope[B]] = self._validate
        """pydantic's validation alone: raises its ``ValidationError``, checks no ``kind``
        (for a hot path that checks the kind itself and calls :meth:`decode` on failure, so
        that the reason is :meth:`decode`'s)."""

    def decode(self, payload: bytes, subject: str = "") -> Envelope[B]:
        """Decode and validate, or raise :class:`EnvelopeError` saying what is wrong."""
        try:
            env: Envelope[B] = self._validate(payload)
        except ValidationError as exc:
            reason = describe_validation_error(exc)
            kind = _peek_kind(payload)  # a body of another kind fails as missing fields: say so
            if kind is not None and kind != self.kind:
                reason = f"unexpected kind {kind!r} (expected {self.kind!r})"
            raise EnvelopeError(reason, subject, payload) from None
        if env.kind != self.kind:
            raise EnvelopeError(
                f"unexpected kind {env.kind!r} (expected {self.kind!r})", subject, payload
            )
        return env


def _peek_kind(payload: bytes) -> str | None:
    """The ``kind`` of a payload that failed validation, if it is readable at all."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    kind = data.get("kind") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) and kind else None


class AnyEnvelopeDecoder:
    """Validates the envelope around any body, keeping the body as a JSON object."""

    __slots__ = ("_adapter", "kind", "validate_json")

    def __init__(self) -> None:
        self._adapter: type[Envelope[dict[str, Any]]] = Envelope[dict[str, Any]]
        self.kind: str | None = None
        """Any kind will do."""
        self.validate_json: Callable[[bytes], Envelope[dict[str, Any]]] = (
            self._adapter.__pydantic_validator__.validate_json
        )
        """As :attr:`EnvelopeDecoder.validate_json`."""

    def decode(self, payload: bytes, subject: str = "") -> Envelope[dict[str, Any]]:
        """Decode and validate the envelope; the body only has to be a JSON object."""
        try:
            return self._adapter.model_validate_json(payload)
        except ValidationError as exc:
            raise EnvelopeError(describe_validation_error(exc), subject, payload) from None


def describe_validation_error(exc: ValidationError, limit: int = 5) -> str:
    """A one-line summary of a pydantic error: where and what, for the first few problems."""
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(payload)"
        parts.append(f"{loc}: {err['msg']}")
    extra = exc.error_count() - limit
    if extra > 0:
        parts.append(f"and {extra} more")
    return "; ".join(parts)


def dead_letter(
    subject: str, reason: str, receiver: str, payload: bytes, limit: int = 4096
) -> DeadLetter:
    """Wrap a rejected payload for the DLQ, cut to ``limit`` bytes so it always fits."""
    cut = payload[:limit]
    try:
        text = cut.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError as exc:
        if len(payload) > limit and exc.reason == "unexpected end of data":
            # The cut split a multi-byte character of UTF-8 text: keep the text before it.
            text = cut[: exc.start].decode("utf-8")
            encoding = "utf-8"
        else:
            text = base64.b64encode(cut).decode("ascii")
            encoding = "base64"
    return DeadLetter(
        subject=subject,
        reason=reason,
        receiver=receiver,
        size=len(payload),
        payload=text,
        encoding=encoding,
        truncated=len(payload) > limit,
    )


def dump_model(model: BaseModel) -> bytes:
    """JSON of any pydantic model, compact."""
    return model.__pydantic_serializer__.to_json(model)
