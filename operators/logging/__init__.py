"""Logging: writes every log event of the bus to JSON-lines files, one file per operator.

Every log event is published as an ``Envelope[LogRecord]`` on ``{p}.log.{level}.{operator_id}``
and kept for a while by the JetStream stream ``<PREFIX>_LOGS``
(:func:`eeveepy.logs.stream_name`), which the supervisor creates. This operator reads that
stream through a durable pull consumer (:data:`DURABLE`), so the events published while it
was down are written when it comes back, and appends each event to
``<directory>/<operator>.jsonl``: one line per event, the envelope
JSON as it was received, so ``jq`` reads the files as they are::

    cd ~/.local/state/eevee/log/operators
    jq -r '[.timestamp, .body.level, .body.event] | @tsv' echo.jsonl

The file is named after the record's ``operator`` field, if that is a **configured** operator
id: one the supervisors list on ``{p}.supervisor.status`` (asked at start, every
``supervisor_refresh`` seconds, and when an event names an id not known yet; see
:mod:`operators.logging.known`), ``supervisor``, this operator's own id, or one of the
``operators`` setting. Anyone on the bus can publish on ``{p}.log.<level>.<any-id>``, so the
events of every other id go to one shared file, ``_unknown.jsonl``, each line still the
envelope as received (its ``body.operator`` keeps the claimed id). A payload that is not a
valid log envelope, or whose ``operator`` is not an operator id, goes to ``_invalid.jsonl``,
wrapped in a ``dlq`` envelope (a :class:`~eeveepy.models.DeadLetter` whose ``payload`` is the
payload as received, ``reason`` says what was wrong). No name can reach outside the directory.

Disk use is bounded as a whole:

- a file is rotated before a write would take it over ``max_bytes``: ``<id>.jsonl`` becomes
  ``<id>.jsonl.1``, ``.1`` becomes ``.2`` and so on up to ``backups`` files (``bucket_backups``
  for ``_unknown`` and ``_invalid``); older ones are deleted;
- at most ``max_ids`` known operator ids have files of their own (further ones go to
  ``_unknown``);
- all the files together stay under ``max_total_bytes``: when a write takes them over it, the
  oldest files are deleted, rotated files first (oldest first across all ids), then the
  current files of the ids written to least recently, down to half a file under the cap, so
  the directory never holds more than the cap plus the event being written;
- files not written to for ``max_age_days`` are deleted (at start, on reload and hourly).

Events filed under ``_unknown`` or ``_invalid``, dropped, or files deleted for the cap are
reported as warnings on the bus, at most one of each kind a minute (never one per event).

Files are written by one worker thread through buffered handles (at most ``max_open_files``
open, least recently used closed first), flushed (and fsynced with ``fsync``) after each
batch, before the batch is acknowledged: delivery is at least once, and exactly once across
clean restarts.

Without the stream (``stream = false``, or still missing after ``stream_wait`` seconds) it
falls back to a plain subscription on ``{p}.log.>``, with a warning: events published while it
is down are then lost. In that mode it looks for the stream every 30 s and switches to it when
it appears.

Run it under ``eevee up`` (``module = "operators.logging"``, id ``logging``) or alone::

    python -m operators.logging --id logging --nats-url nats://127.0.0.1:4222
"""

from __future__ import annotations

from .files import BatchResult, LogFiles, Pruned
from .known import KnownIds, ask_supervisors
from .service import create, main
from .settings import (
    DURABLE,
    INVALID_NAME,
    UNKNOWN_NAME,
    LoggingSettings,
    resolve_directory,
)

__all__ = [
    "DURABLE",
    "INVALID_NAME",
    "UNKNOWN_NAME",
    "BatchResult",
    "KnownIds",
    "LogFiles",
    "LoggingSettings",
    "Pruned",
    "ask_supervisors",
    "create",
    "main",
    "resolve_directory",
]
