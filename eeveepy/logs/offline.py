"""Reading log history from the logging operator's files, for ``eevee logs`` while the bus is
down (the history stream lives in the bus; the files outlive it).

The logging operator (``operators.logging``) writes each record as its envelope, one JSON line
per event, to ``<directory>/<operator>.jsonl`` (rotated to ``.jsonl.1``, ``.2``...; events of
unknown ids go to ``_unknown.jsonl``). :func:`log_directory` finds that directory the way the
operator does; :func:`read_log_files` reads every file back, keeps what a
:class:`~eeveepy.logs.history.LogFilter` matches and returns it oldest first.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from eeveepy.errors import EnvelopeError
from eeveepy.logs.history import LogFilter
from eeveepy.paths import Paths
from eeveepy.protocol.codec import EnvelopeDecoder
from eeveepy.protocol.models import Envelope, LogRecord

__all__ = ["LOGGING_MODULE", "log_directory", "read_log_files"]

LOGGING_MODULE: Final = "operators.logging"
"""The module of the logging operator, whose settings say where the files are."""
_FILE_RE: Final = re.compile(r"(?!_invalid\.)[^/]+\.jsonl(?:\.[1-9][0-9]*)?")


def log_directory(
    operators: Mapping[str, Any], paths: Paths, default: Paths | None = None
) -> Path | None:
    """The logging operator's directory in a configuration's ``operators`` (its tables, by
    id); None when no operator runs ``operators.logging``. As the operator resolves it: its
    ``directory`` setting, absolute or relative to its data directory, else ``<log dir of
    the platform>/operators``."""
    for op_id, cfg in operators.items():
        if getattr(cfg, "module", None) != LOGGING_MODULE:
            continue
        directory = (getattr(cfg, "settings", None) or {}).get("directory")
        if not directory:
            return (default or Paths.default()).log_dir / "operators"
        path = Path(str(directory)).expanduser()
        return path if path.is_absolute() else paths.operator(op_id).data_dir / path
    return None


def read_log_files(directory: Path, flt: LogFilter, tail: int | None) -> list[Envelope[LogRecord]]:
    """The records of every file in ``directory`` that ``flt`` matches, oldest first (the last
    ``tail`` of them, when given). Lines that are not log envelopes are skipped."""
    found = [env for env in _records(directory) if flt.matches(env)]
    found.sort(key=lambda env: env.body.time or env.timestamp)
    return found[max(0, len(found) - tail) :] if tail is not None else found


def _records(directory: Path) -> Iterator[Envelope[LogRecord]]:
    decoder = EnvelopeDecoder(LogRecord)
    for path in sorted(directory.iterdir()):
        if not _FILE_RE.fullmatch(path.name) or not path.is_file():
            continue
        with contextlib.suppress(OSError), path.open("rb") as f:
            for line in f:
                with contextlib.suppress(EnvelopeError):
                    yield decoder.decode(line.strip())
