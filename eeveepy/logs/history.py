"""Reading log history: which records ``eevee logs`` asks for, and reading them back.

A :class:`LogFilter` says what is shown (operators, lowest level, since when, a text) and
which subjects of the history stream can hold it; :func:`read_logs` reads the stream of
:mod:`eeveepy.logs.stream` through an ordered consumer, oldest first, the last ``tail``
records of the history and then, when following, what arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from eeveepy.errors import BusError, EnvelopeError, SubjectError
from eeveepy.logs.records import SUPERVISOR_SOURCE
from eeveepy.logs.render import render_fields
from eeveepy.logs.stream import stream_name
from eeveepy.protocol.codec import EnvelopeDecoder
from eeveepy.protocol.models import Envelope, LogLevel, LogRecord
from eeveepy.protocol.subjects import validate_operator_id

__all__ = ["LogFilter", "LogReadStats", "read_logs"]

_LEVEL_ORDER: Final = MappingProxyType({level: i for i, level in enumerate(LogLevel)})
_GLOB_CHARS: Final = frozenset("*?[")


def _is_glob(pattern: str) -> bool:
    return any(c in _GLOB_CHARS for c in pattern)


@dataclass
class LogFilter:
    """What ``eevee logs`` shows.

    ``operators``: operator ids, exact (``echo``) or fnmatch globs (``irc.*``); empty = all.
    ``min_level``: the lowest level shown. ``since``: records logged at or after this time
    (naive = UTC). ``grep``: a case-insensitive substring of the event or its rendered fields.
    """

    operators: list[str] = field(default_factory=list)
    min_level: LogLevel | None = None
    since: datetime | None = None
    grep: str | None = None

    def __post_init__(self) -> None:
        if self.since is not None and self.since.tzinfo is None:
            self.since = self.since.replace(tzinfo=UTC)

    def matches(self, env: Envelope[LogRecord]) -> bool:
        """True when ``env`` passes every criterion."""
        record = env.body
        if self.operators:
            # The supervisor's events about an operator (state changes, restarts) belong to it.
            about = record.fields.get("operator") if record.operator == SUPERVISOR_SOURCE else None
            names = [record.operator] if not isinstance(about, str) else [record.operator, about]
            if not any(
                name == p or (_is_glob(p) and fnmatch.fnmatchcase(name, p))
                for p in self.operators
                for name in names
            ):
                return False
        if self.min_level is not None and _LEVEL_ORDER[record.level] < _LEVEL_ORDER[self.min_level]:
            return False
        if self.since is not None and (record.time or env.timestamp) < self.since:
            return False
        if self.grep:
            needle = self.grep.lower()
            if needle not in record.event.lower() and (
                not record.fields or needle not in render_fields(record.fields).lower()
            ):
                return False
        return True

    def subjects(self, prefix: str) -> list[str]:
        """The narrowest stream subjects holding every match (the filter still applies)."""
        levels: list[str] = ["*"]
        if self.min_level is not None and self.min_level is not LogLevel.DEBUG:
            floor = _LEVEL_ORDER[self.min_level]
            levels = [lv.value for lv in LogLevel if _LEVEL_ORDER[lv] >= floor]
        ids: list[str] = [">"]
        if self.operators and not any(_is_glob(p) for p in self.operators):
            try:
                ids = sorted({validate_operator_id(p) for p in self.operators})
                ids.append(SUPERVISOR_SOURCE)
            except SubjectError:
                ids = [">"]  # no such subject: the filter alone rejects it
        subjects = [f"{prefix}.log.{lv}.{op}" for lv in levels for op in ids]
        if subjects == [f"{prefix}.log.*.>"] or len(subjects) > 64:
            return [f"{prefix}.log.>"]
        return subjects


@dataclass
class LogReadStats:
    """Counters of one :func:`read_logs` call."""

    received: int = 0
    matched: int = 0
    skipped: int = 0
    """Messages in the stream that are not valid log envelopes."""


async def read_logs(
    js: JetStreamContext,
    prefix: str,
    flt: LogFilter,
    *,
    follow: bool,
    tail: int | None,
    stats: LogReadStats | None = None,
    timeout: float = 5.0,
) -> AsyncIterator[Envelope[LogRecord]]:
    """Yield the records of the log stream of ``prefix`` that ``flt`` matches, oldest first.

    History starts at ``flt.since`` when set, else at the beginning; with ``tail`` only the
    last ``tail`` matching records of the history are yielded (they are collected until the
    consumer has caught up). Without ``follow`` the iteration ends at the end of the history;
    with it, new records are yielded as they arrive until the caller stops iterating.
    Malformed messages are skipped and counted in ``stats``. Raises :class:`BusError` when the
    stream cannot be read (missing, JetStream down); ``timeout`` bounds each JetStream request.
    """
    counters = stats if stats is not None else LogReadStats()
    name = stream_name(prefix)
    subjects = flt.subjects(prefix)
    config = ConsumerConfig()
    policy = DeliverPolicy.ALL
    if flt.since is not None:
        policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = flt.since
    elif tail == 0:
        policy = DeliverPolicy.NEW
    if len(subjects) > 1:
        config.filter_subjects = subjects
    if tail == 0 and not follow:
        return
    decoder = EnvelopeDecoder(LogRecord)
    try:
        sub = await asyncio.wait_for(
            js.subscribe(
                subjects[0],
                stream=name,
                config=config,
                ordered_consumer=True,
                deliver_policy=policy,
            ),
            timeout,
        )
    except TimeoutError:
        raise BusError(
            f"log stream {name}: no answer from JetStream within {timeout:g} s"
        ) from None
    except NotFoundError:
        raise BusError(f"no log stream {name}: is `eevee up` running with this prefix?") from None
    except nats.errors.Error as exc:
        reason = getattr(exc, "description", None) or str(exc) or type(exc).__name__
        raise BusError(f"cannot read the log stream {name}: {reason}") from None
    try:
        caught_up = await _caught_up(sub, timeout, drained=False)
        buffered: deque[Envelope[LogRecord]] | None = (
            deque(maxlen=tail) if tail is not None and not caught_up else None
        )
        if caught_up and not follow:
            return
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except nats.errors.TimeoutError:
                if not caught_up and await _caught_up(sub, timeout, drained=True):
                    caught_up = True
                    for env in buffered or ():
                        yield env
                    buffered = None
                    if not follow:
                        return
                continue
            except nats.errors.ConnectionClosedError:
                raise BusError(f"connection closed while reading {name}") from None
            counters.received += 1
            try:
                remaining: int | None = msg.metadata.num_pending
            except Exception:
                remaining = None
            try:
                env = decoder.decode(msg.data, msg.subject)
            except EnvelopeError:
                counters.skipped += 1
            else:
                if flt.matches(env):
                    counters.matched += 1
                    if buffered is not None:
                        buffered.append(env)
                    else:
                        yield env
            if not caught_up and remaining == 0:
                caught_up = True
                for held in buffered or ():
                    yield held
                buffered = None
                if not follow:
                    return
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sub.unsubscribe(), 1.0)


async def _caught_up(sub: Any, timeout: float, *, drained: bool) -> bool:
    """True when the consumer has no more history to deliver.

    ``drained`` says every message delivered so far has been taken from the subscription;
    otherwise the last one delivered will say it was the last (``num_pending == 0``).
    """
    try:
        info = await asyncio.wait_for(sub.consumer_info(), timeout)
    except Exception:
        return False
    if info.num_pending:
        return False
    delivered = info.delivered.consumer_seq if info.delivered is not None else 0
    return drained or delivered == 0
