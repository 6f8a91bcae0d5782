"""Log records: what an operator's line, or a supervisor's event, becomes on the bus.

Operators write lines (JSON events from :mod:`eeveepy.logs.setup`, or any text); the
supervisor turns each into a :class:`~eeveepy.protocol.models.LogRecord`
(:func:`record_from_line`) and shows it on its own console (:func:`relay_record`). The
supervisor's own structlog events become records through :func:`record_from_event`. Every
function here accepts anything it is given: a malformed line is still a record.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from types import MappingProxyType
from typing import Any, Final, Literal

import structlog

from eeveepy.protocol.models import LogLevel, LogRecord, utcnow

__all__ = [
    "MAX_LINE_BYTES",
    "RELAYED_KEY",
    "SUPERVISOR_SOURCE",
    "level_from_name",
    "record_from_event",
    "record_from_line",
    "relay_record",
]

MAX_LINE_BYTES: Final = 16 * 1024
"""Captured plain-text lines (and event texts) are cut to this many UTF-8 bytes."""

SUPERVISOR_SOURCE: Final = "supervisor"
"""The operator id under which the supervisor's own events are published."""

RELAYED_KEY: Final = "_relayed"
"""Marks an event the supervisor relays from an operator: shown, never shipped again."""

_LEVELS: Final = MappingProxyType(
    {
        "debug": LogLevel.DEBUG,
        "info": LogLevel.INFO,
        "warning": LogLevel.WARNING,
        "warn": LogLevel.WARNING,
        "error": LogLevel.ERROR,
        "exception": LogLevel.ERROR,
        "critical": LogLevel.CRITICAL,
        "fatal": LogLevel.CRITICAL,
    }
)

# Control characters (C0 but tab, DEL, C1) and lone surrogates: removed from captured text.
_STRIP_RE: Final = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")
_MAX_JSON_DEPTH: Final = 32
# Keys of a record's own that an event's fields must not take over when relayed.
_RESERVED: Final = frozenset({"event", "level", "timestamp", "operator", "stream", RELAYED_KEY})


def level_from_name(name: object) -> LogLevel:
    """The :class:`LogLevel` of a level name; aliases (warn, exception, fatal) map, else info."""
    if isinstance(name, str):
        return _LEVELS.get(name.strip().lower(), LogLevel.INFO)
    return LogLevel.INFO


def _cut(text: str, limit: int = MAX_LINE_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    if len(text) * 4 <= limit:
        return text
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


def _valid_str(text: str) -> str:
    """``text`` with lone surrogates (which cannot be encoded as UTF-8) replaced."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _clean_json(value: Any, depth: int = 0) -> Any:
    """A value parsed by ``json.loads`` made safe to serialize again (UTF-8, bounded depth)."""
    if isinstance(value, str):
        return _valid_str(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= _MAX_JSON_DEPTH:
        try:
            return json.dumps(value)  # ASCII, escapes included: always encodable
        except (ValueError, TypeError, RecursionError):
            return "<nested too deep>"
    if isinstance(value, list):
        return [_clean_json(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {_valid_str(str(k)): _clean_json(v, depth + 1) for k, v in value.items()}
    return _valid_str(repr(value))


def _jsonable(value: Any, depth: int = 0) -> Any:
    """Any Python value as JSON-compatible data (unknown objects become their repr)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _valid_str(value)
    if isinstance(value, Enum):
        return _jsonable(value.value, depth)
    if isinstance(value, datetime):
        return value.isoformat()
    if depth >= 8:
        return _valid_str(repr(value))
    if isinstance(value, Mapping):
        return {_valid_str(str(k)): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, os.PathLike):
        return _valid_str(os.fspath(value)) if isinstance(os.fspath(value), str) else repr(value)
    return _valid_str(repr(value))


def _parse_time(value: object) -> datetime | None:
    """An aware datetime from an ISO 8601 string, else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None or when.utcoffset() is None:
        return None
    return when


def record_from_line(operator_id: str, line: str, stream: Literal["stdout", "stderr"]) -> LogRecord:
    """Turn one line an operator wrote into a :class:`LogRecord`; never raises.

    A JSON object with a string ``"event"`` (what :func:`~eeveepy.logs.setup.configure_logging`
    writes into a supervisor's pipe) keeps its level (``level``, aliases mapped, unknown ->
    info), its time (``timestamp``, when it is an aware ISO 8601 time) and every other key as
    ``fields``; an ``operator`` key equal to ``operator_id`` is dropped as redundant. Any other
    line is a plain event: info on stdout, warning on stderr, control characters but tab
    removed, cut to 16 KiB. Records without a time of their own are stamped with the capture
    time. ``stream`` is set either way.
    """
    try:
        return _record_from_line(operator_id, line, stream)
    except Exception:  # pragma: no cover - defensive: a bug here must not lose the line
        return _plain(operator_id, str(line), stream)


def _plain(operator_id: str, line: str, stream: Literal["stdout", "stderr"]) -> LogRecord:
    return LogRecord(
        operator=operator_id,
        level=LogLevel.WARNING if stream == "stderr" else LogLevel.INFO,
        event=_cut(_STRIP_RE.sub("", line)),
        time=utcnow(),
        stream=stream,
    )


def _record_from_line(
    operator_id: str, line: str, stream: Literal["stdout", "stderr"]
) -> LogRecord:
    stripped = line.strip()
    if stripped.startswith("{") and len(line) <= MAX_LINE_BYTES:
        try:
            data = json.loads(stripped)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("event"), str):
            fields: dict[str, Any] = {}
            for key, value in data.items():
                if key in ("event", "level", "timestamp"):
                    continue
                if key == "operator" and value == operator_id:
                    continue
                fields[_valid_str(key)] = _clean_json(value, 1)
            return LogRecord(
                operator=operator_id,
                level=level_from_name(data.get("level")),
                event=_cut(_valid_str(data["event"])),
                time=_parse_time(data.get("timestamp")) or utcnow(),
                stream=stream,
                fields=fields,
            )
    return _plain(operator_id, line, stream)


def record_from_event(source: str, method_name: str, event: Mapping[str, Any]) -> LogRecord:
    """The record of one structlog event (after its processors), published as ``source``.

    The level is the event's ``level`` (else the log method's name), the time its
    ``timestamp``; every other key but ``exc_info`` becomes a field, made JSON-compatible.
    An ``exception`` field is expected to be rendered already (``format_exc_info``).
    """
    fields = {
        _valid_str(str(k)): _jsonable(v)
        for k, v in event.items()
        if k not in ("event", "level", "timestamp", "exc_info")
    }
    return LogRecord(
        operator=source,
        level=level_from_name(event.get("level", method_name)),
        event=_cut(_valid_str(str(event.get("event", "")))),
        time=_parse_time(event.get("timestamp")) or utcnow(),
        fields=fields,
    )


def relay_record(record: LogRecord, logger: Any = None) -> None:
    """Show an operator's record through the supervisor's structlog, marked as relayed.

    The event carries ``operator``, ``stream`` and the record's fields (a field that clashes
    with a reserved key gets a ``_`` suffix), and is not shipped again.
    """
    log = logger if logger is not None else structlog.get_logger("eeveepy.relay")
    kw: dict[str, Any] = {}
    for key, value in record.fields.items():
        if key in _RESERVED:
            key = key + "_"
        kw[key] = value
    kw["operator"] = record.operator
    if record.stream is not None:
        kw["stream"] = record.stream
    kw[RELAYED_KEY] = True
    method = record.level.value  # debug, info, warning, error, critical
    getattr(log, method)(record.event, **kw)
