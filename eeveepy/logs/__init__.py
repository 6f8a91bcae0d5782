"""Logs as bus traffic: capture, shipping, retention and reading.

The path of one log event, one module per step::

    operator: structlog (setup), one JSON line on stderr, never blocking (writer, render)
      -> supervisor reads the pipe; the line becomes a LogRecord (records)
      -> LogShipper publishes it on {p}.log.{level}.{operator_id} (shipper)
      -> the JetStream stream <PREFIX>_LOGS keeps recent history (stream)
      -> `eevee logs` reads it back through a LogFilter (history; the command: eeveepy.cli.logs)

The supervisor's own events take the same road from :func:`configure_supervisor_logging`,
published on ``{p}.log.{level}.supervisor``.

Every buffer on the way is bounded and drops the oldest (shipper) or newest (stderr writer)
entries when full; what was dropped is counted and reported as one warning event once the
buffer has caught up. Nothing on the way blocks the caller of a log method.

The names below are the logs' public surface, importable from here or from their module.
"""

from __future__ import annotations

from eeveepy.logs.history import LogFilter, LogReadStats, read_logs
from eeveepy.logs.records import (
    MAX_LINE_BYTES,
    SUPERVISOR_SOURCE,
    level_from_name,
    record_from_line,
    relay_record,
)
from eeveepy.logs.render import BoundedJSONRenderer, render, render_fields
from eeveepy.logs.setup import (
    configure_logging,
    configure_operator_logging,
    configure_supervisor_logging,
)
from eeveepy.logs.shipper import LogShipper
from eeveepy.logs.stream import ensure_log_stream, stream_name
from eeveepy.logs.writer import StderrJsonWriter

__all__ = [
    "MAX_LINE_BYTES",
    "SUPERVISOR_SOURCE",
    "BoundedJSONRenderer",
    "LogFilter",
    "LogReadStats",
    "LogShipper",
    "StderrJsonWriter",
    "configure_logging",
    "configure_operator_logging",
    "configure_supervisor_logging",
    "ensure_log_stream",
    "level_from_name",
    "read_logs",
    "record_from_line",
    "relay_record",
    "render",
    "render_fields",
    "stream_name",
]
