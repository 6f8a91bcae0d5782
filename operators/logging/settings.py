"""The logging operator's settings and file names."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from eeveepy.bus.names import log_stream_name as log_stream_name
from eeveepy.errors import SubjectError
from eeveepy.paths import Paths
from eeveepy.protocol.subjects import validate_operator_id

DURABLE: Final = "logging-files"
"""Name of the durable JetStream consumer that remembers what has been written."""
INVALID_NAME: Final = "_invalid"
"""File stem of the events that are not valid log envelopes (never an operator id)."""
UNKNOWN_NAME: Final = "_unknown"
"""File stem of the valid events whose operator id is not a configured one (never an id)."""
BUCKETS: Final = frozenset({INVALID_NAME, UNKNOWN_NAME})
"""The shared files, as opposed to one file per operator id."""

MIB: Final = 1024 * 1024


class LoggingSettings(BaseModel):
    """Settings of the logging operator.

    Disk use is bounded three ways: each file by ``max_bytes`` (then rotated, ``backups``
    kept), the number of operator ids with files of their own by ``max_ids``, and all the
    files together by ``max_total_bytes``. Only configured operator ids get files of their
    own (see ``operators`` and ``supervisor_refresh``); every other id is filed under
    ``_unknown.jsonl``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    directory: str | None = None
    """Where the files go; default ``<log dir>/operators``, relative paths under the data dir."""
    max_bytes: int = Field(default=10 * MIB, ge=1)
    """A file is rotated before a write would take it over this size."""
    backups: int = Field(default=5, ge=0)
    """Rotated files kept per operator (``<id>.jsonl.1`` newest ... ``.N``); 0 keeps none."""
    max_total_bytes: int = Field(default=256 * MIB, ge=2)
    """All the files of the directory together (every id, rotated files, ``_unknown``,
    ``_invalid``) stay under this: once a write takes them over it, the oldest files are
    deleted (rotated files first, oldest first, across all ids) down to this less half of
    ``max_bytes``. At least twice ``max_bytes``."""
    max_ids: int = Field(default=256, ge=1)
    """Known operator ids with files of their own; events of further ids go to ``_unknown``
    (files left by ids no longer known do not count: they go with age or the total cap)."""
    bucket_backups: int = Field(default=1, ge=0)
    """Rotated files kept of ``_unknown.jsonl`` and ``_invalid.jsonl`` (anyone on the bus can
    fill them, so they keep little: ``(1 + bucket_backups) * max_bytes`` each at most)."""
    operators: tuple[str, ...] = ()
    """Operator ids that always get files of their own, besides ``supervisor``, this
    operator's id and the ids the supervisors list (for publishers no supervisor runs)."""
    supervisor_refresh: float = Field(default=30.0, gt=0)
    """Seconds between asks on ``{p}.supervisor.status`` for the configured operator ids (also
    asked, at most every 2 s, when an event names an id not known yet)."""
    forget_after: float = Field(default=3600.0, ge=0)
    """Seconds an id stays known after the last supervisor answer that listed it; only
    answers count, so ids are never forgotten while no supervisor answers."""
    max_age_days: float = Field(default=14.0, gt=0)
    """Files not written to for this long (by modification time) are deleted."""
    stream: bool = True
    """Read the ``<PREFIX>_LOGS`` JetStream stream with a durable consumer."""
    stream_wait: float = Field(default=10.0, ge=0)
    """Seconds to wait for the stream to exist before falling back to a plain subscription."""
    fsync: bool = False
    """fsync each file written to after each batch (slower, survives a power cut)."""
    max_open_files: int = Field(default=32, ge=1)
    """Files kept open at once; the least recently used is closed first."""

    @field_validator("operators")
    @classmethod
    def _operator_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for op_id in value:
            try:
                validate_operator_id(op_id)
            except SubjectError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _room_for_two_files(self) -> LoggingSettings:
        if self.max_total_bytes < 2 * self.max_bytes:
            raise ValueError(
                f"max_total_bytes ({self.max_total_bytes}) must be at least twice "
                f"max_bytes ({self.max_bytes})"
            )
        return self


def resolve_directory(settings: LoggingSettings, data_dir: Path) -> Path:
    """The directory the files go to: absolute, relative to ``data_dir``, or the default."""
    if settings.directory is None:
        return Paths.default().log_dir / "operators"
    path = Path(settings.directory).expanduser()
    return path if path.is_absolute() else data_dir / path
