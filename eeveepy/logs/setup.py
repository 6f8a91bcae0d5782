"""The one structlog setup of every eeveepy process.

Every process logs through structlog, configured by :func:`configure_logging`. The kinds of
process differ in a few choices only:

================================  ===========================  ==============================
process                           lines                        also
================================  ===========================  ==============================
operator under a supervisor       JSON, at most 16 KiB each,   ``operator`` key on each event
                                  into the supervisor's pipe
                                  (a thread writes those it
                                  cannot take at once)
operator run by hand              console text on stderr       ``operator`` key on each event
supervisor (``eevee up``)         console text or JSON on      each event shipped to the bus
                                  stderr or the live status
any other ``eevee`` command       console text on stderr,      -
                                  warnings and worse
================================  ===========================  ==============================

:func:`configure_operator_logging` and :func:`configure_supervisor_logging` name the first
three. Nothing here touches the bus: shipping is a callable (``LogShipper.submit``).
"""

from __future__ import annotations

import atexit
import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog

from eeveepy.errors import LogQueryError
from eeveepy.logs.records import RELAYED_KEY, SUPERVISOR_SOURCE, record_from_event
from eeveepy.logs.render import BoundedJSONRenderer
from eeveepy.logs.writer import ConsoleLoggerFactory, SafeStream, StderrJsonWriter
from eeveepy.protocol.models import LogRecord

__all__ = [
    "adopt_operator_logging",
    "configure_logging",
    "configure_operator_logging",
    "configure_supervisor_logging",
]

Processor = Callable[[Any, str, MutableMapping[str, Any]], Any]
EventDict = MutableMapping[str, Any]


def _add_logger_name(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    name = getattr(logger, "name", None)
    if isinstance(name, str) and name:
        event_dict.setdefault("logger", name)
    return event_dict


class _AddOperator:
    """The processor adding ``"operator": <id>`` to each event; the id can be set later (a
    forked child takes over the configuration its fork server made, see
    :func:`adopt_operator_logging`)."""

    __slots__ = ("operator_id",)

    def __init__(self, operator_id: str) -> None:
        self.operator_id = operator_id

    def __call__(self, logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("operator", self.operator_id)
        return event_dict


def _shipper(submit: Callable[[LogRecord], None] | None, source: str) -> Processor:
    """Submit each event as a record of ``source``, but those marked as relayed; drop the mark."""

    def processor(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        relayed = event_dict.pop(RELAYED_KEY, False)
        if submit is None or relayed:
            return event_dict
        try:
            data = event_dict
            if "exc_info" in data and "exception" not in data:
                data = structlog.processors.format_exc_info(logger, method_name, dict(data))
            submit(record_from_event(source, method_name, data))
        except Exception:  # shipping must never break logging
            pass
        return event_dict

    return processor


def _level_number(level: str) -> int:
    number = logging.getLevelNamesMapping().get(level.strip().upper())
    if number is None:
        raise LogQueryError(
            f"unknown log level {level!r}: use debug, info, warning, error or critical"
        )
    return number


def _replace_writer(new: StderrJsonWriter | None) -> None:
    """Retire the writer of the current structlog configuration, if it is not ``new``."""
    try:
        old = structlog.get_config().get("logger_factory")
    except Exception:  # pragma: no cover - structlog's API
        return
    if isinstance(old, StderrJsonWriter) and old is not new:
        atexit.unregister(old.close)
        old.close(0.5)


def configure_logging(
    *,
    level: str = "info",
    json: bool = False,
    stream: TextIO | None = None,
    operator: str | None = None,
    piped: bool = False,
    capacity: int = 10000,
    ship: Callable[[LogRecord], None] | None = None,
    source: str = SUPERVISOR_SOURCE,
) -> StderrJsonWriter | None:
    """Configure structlog for this process; events below ``level`` are not logged.

    Events go to ``stream`` (stderr) as console text (colours on a TTY only) or, with
    ``json``, one JSON object per line, ``{"event", "level", "timestamp", "logger", ...}``,
    exceptions rendered into ``"exception"``. ``operator`` adds ``"operator": <id>`` to each.

    ``piped`` says ``stream`` is the pipe a supervisor reads (implies ``json``): each line is
    kept within :data:`~eeveepy.logs.records.MAX_LINE_BYTES` and written by a
    :class:`StderrJsonWriter` of ``capacity`` lines, which is returned and flushed (bounded)
    at exit; otherwise None is returned.

    With ``ship`` (a :meth:`~eeveepy.logs.shipper.LogShipper.submit`) each event also becomes
    a :class:`LogRecord` of operator ``source`` and is submitted, but events logged with
    ``_relayed=True`` (see :func:`~eeveepy.logs.records.relay_record`); that marker is never
    rendered. Raises :class:`LogQueryError` for an unknown ``level``.
    """
    threshold = _level_number(level)
    # Any: a SafeStream stands in for the TextIO that structlog's loggers write to.
    out: Any = SafeStream(stream if stream is not None else sys.stderr)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_logger_name,
    ]
    if operator is not None:
        processors.append(_AddOperator(operator))
    processors += [
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if json or piped:
        processors.append(structlog.processors.format_exc_info)
    processors.append(_shipper(ship, source))
    writer: StderrJsonWriter | None = None
    factory: Any
    if piped:
        writer = StderrJsonWriter(out, capacity=capacity, operator=operator)
        processors.append(BoundedJSONRenderer())
        factory = writer
    else:
        processors.append(
            structlog.processors.JSONRenderer()
            if json
            else structlog.dev.ConsoleRenderer(colors=out.isatty())
        )
        factory = ConsoleLoggerFactory(out)
    _replace_writer(writer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    if writer is not None:
        atexit.register(writer.close, 1.0)
    return writer


def configure_operator_logging(
    operator_id: str,
    *,
    json_lines: bool,
    level: str = "info",
    stream: TextIO | None = None,
    capacity: int = 10000,
) -> StderrJsonWriter | None:
    """Configure structlog for an operator process (see :func:`configure_logging`).

    With ``json_lines`` (the operator runs under a supervisor: ``EEVEE_SUPERVISOR`` is set)
    every event is a JSON line written into the supervisor's pipe by the returned
    :class:`StderrJsonWriter`; otherwise console text, and None is returned.
    """
    return configure_logging(
        level=level,
        json=json_lines,
        stream=stream,
        operator=operator_id,
        piped=json_lines,
        capacity=capacity,
    )


def adopt_operator_logging(operator_id: str) -> bool:
    """Make the operator configuration of a fork server this child's: every event names
    ``operator_id`` from now on. True when there was one (the fork server made it with
    :func:`configure_operator_logging` before it forked, so that its children share it instead
    of each building it again); False leaves structlog as it was."""
    try:
        config = structlog.get_config()
    except Exception:  # pragma: no cover - structlog's API
        return False
    writer = config.get("logger_factory")
    fields = [p for p in config.get("processors", ()) if isinstance(p, _AddOperator)]
    if not (isinstance(writer, StderrJsonWriter) and fields):
        return False
    writer.operator = operator_id
    for field in fields:
        field.operator_id = operator_id
    return True


def configure_supervisor_logging(
    shipper_submit: Callable[[LogRecord], None] | None,
    *,
    json: bool,
    level: str,
    stream: TextIO | None = None,
    source: str = SUPERVISOR_SOURCE,
) -> None:
    """Configure structlog for the supervisor process (see :func:`configure_logging`).

    Events go to ``stream`` (stderr) as console text or JSON lines, and each is submitted to
    ``shipper_submit`` as a record of ``source``; an ``operator=<id>`` key of the supervisor's
    events about an operator stays in the record's ``fields``.
    """
    configure_logging(level=level, json=json, stream=stream, ship=shipper_submit, source=source)
