"""Log events and records as text: one line for people, one bounded JSON line for a pipe.

:func:`render` is how ``eevee logs`` shows a record; :func:`render_fields` is also what its
``--grep`` searches. Both escape every character a terminal could act on, so a record cannot
move the cursor or change colours. :class:`BoundedJSONRenderer` is the last structlog
processor of an operator under a supervisor: it keeps each event one line the supervisor
reads whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, MutableMapping
from datetime import UTC, tzinfo
from types import MappingProxyType
from typing import Any, Final

import structlog

from eeveepy.logs.records import MAX_LINE_BYTES
from eeveepy.protocol.models import Envelope, LogLevel, LogRecord

__all__ = ["BoundedJSONRenderer", "render", "render_fields"]

# Everything a terminal could act on: escaped when rendering.
_ESCAPE_RE: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_ESCAPES: Final = MappingProxyType({"\n": "\\n", "\r": "\\r", "\t": "\\t"})
_BARE_VALUE_RE: Final = re.compile(r"[^\s=\"']+")

_COLORS: Final = MappingProxyType(
    {
        LogLevel.DEBUG: "\033[2m",
        LogLevel.INFO: "\033[32m",
        LogLevel.WARNING: "\033[33m",
        LogLevel.ERROR: "\033[31m",
        LogLevel.CRITICAL: "\033[1;31m",
    }
)
_DIM: Final = "\033[2m"
_RESET: Final = "\033[0m"


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)
    except (ValueError, TypeError, RecursionError):
        return repr(value)


def _escape(text: str) -> str:
    """``text`` with every character a terminal could act on written as an escape."""
    if not _ESCAPE_RE.search(text):
        return text
    return _ESCAPE_RE.sub(lambda m: _ESCAPES.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


def render_fields(fields: Mapping[str, Any]) -> str:
    """``key=value`` pairs, values quoted (JSON) when needed; terminal controls escaped."""
    parts = []
    for key, value in fields.items():
        if isinstance(value, str):
            text = value if _BARE_VALUE_RE.fullmatch(value) else _dumps(value)
        else:
            text = _dumps(value)
        parts.append(f"{_escape(str(key))}={_escape(text)}")
    return " ".join(parts)


def render(env: Envelope[LogRecord], *, color: bool, tz: tzinfo = UTC) -> str:
    """One line: ``2026-05-06T07:08:09.123Z LEVEL operator event key=value...`` (``tz`` for
    the time: ISO 8601 to the millisecond, the date included, as the supervisor's console).

    Characters a terminal could act on are escaped, so a record cannot move the cursor or
    change colours; with ``color`` the level (and the time, dimmed) are coloured.
    """
    record = env.body
    when = (record.time or env.timestamp).astimezone(tz)
    clock = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    level = record.level.value.upper().ljust(8)
    if color:
        clock = f"{_DIM}{clock}{_RESET}"
        level = f"{_COLORS[record.level]}{level}{_RESET}"
    parts = [clock, level, _escape(record.operator), _escape(record.event)]
    if record.fields:
        parts.append(render_fields(record.fields))
    return " ".join(parts)


class BoundedJSONRenderer:
    """structlog's JSON renderer, keeping every line within ``limit`` bytes.

    The supervisor cuts longer lines into pieces, which would turn one event into several
    lines of broken JSON. An event over the limit has its largest values cut in the middle
    (head and tail kept: a traceback's last line says what went wrong) and gets
    ``"truncated": true``. Output is ASCII (non-ASCII is escaped), so characters are bytes.
    """

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self.limit = limit
        self._render = structlog.processors.JSONRenderer()

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> str:
        """Render ``event_dict`` as one JSON line of at most ``limit`` bytes."""
        line = str(self._render(logger, method_name, event_dict))
        if len(line) <= self.limit:
            return line
        data: dict[str, Any] = {**event_dict, "truncated": True}
        for _ in range(len(data) + 1):
            line = str(self._render(logger, method_name, dict(data)))
            excess = len(line) - self.limit
            if excess <= 0:
                return line
            sizes = {k: len(_dumps(v)) for k, v in data.items()}
            key = max(sizes, key=sizes.__getitem__)
            value = data[key]
            text = value if isinstance(value, str) else _dumps(value)
            keep = max(0, len(text) - excess - 64)
            data[key] = (
                f"{text[: keep // 2]}...[cut]...{text[len(text) - keep // 2 :]}"
                if keep
                else "...[cut]..."
            )
        minimal = {k: event_dict[k] for k in ("level", "timestamp", "operator") if k in event_dict}
        event = str(event_dict.get("event", ""))[: self.limit // 8]
        return json.dumps({"event": event, **minimal, "truncated": True})[: self.limit]
