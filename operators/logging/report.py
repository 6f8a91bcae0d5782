"""The logging operator's counters and its rate-limited warnings about them.

Logging about logging must not amplify: whatever the number of events filed under
``_unknown``, dropped or pruned, at most one warning of each kind goes out per
:data:`REPORT_INTERVAL` (the first at once, later ones as summaries of the interval).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Final

from structlog.typing import FilteringBoundLogger

from .files import SAMPLE_IDS, BatchResult, Pruned

REPORT_INTERVAL: Final = 60.0
"""Seconds between warnings of one kind, at least (never one per event)."""


@dataclass
class Counts:
    """What happened to the events and files since the operator started."""

    written: int = 0
    invalid: int = 0
    unknown: int = 0
    over_ids: int = 0
    failed: int = 0
    dropped: int = 0
    pruned_files: int = 0
    pruned_bytes: int = 0
    old_files: int = 0

    def add(self, result: BatchResult) -> None:
        self.written += result.written
        self.invalid += result.invalid
        self.unknown += result.unknown
        self.over_ids += result.over_ids
        self.failed += len(result.failed)
        self.pruned_files += result.pruned_files
        self.pruned_bytes += result.pruned_bytes

    def add_pruned(self, pruned: Pruned) -> None:
        self.old_files += pruned.old
        self.pruned_files += pruned.over_cap
        self.pruned_bytes += pruned.over_cap_bytes

    def minus(self, other: Counts) -> Counts:
        return Counts(
            **{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)}
        )


@dataclass
class Reporter:
    """Warns about events not filed normally and files pruned for the cap, rate-limited."""

    log: FilteringBoundLogger
    max_total_bytes: int = 0
    counts: Counts = field(default_factory=Counts)
    unknown_ids: set[str] = field(default_factory=set)
    _reported: Counts = field(default_factory=Counts)
    _last: float | None = None

    def add(self, result: BatchResult) -> None:
        self.counts.add(result)
        room = SAMPLE_IDS - len(self.unknown_ids)
        if room > 0:
            self.unknown_ids.update(sorted(result.unknown_ids)[:room])

    def report(self) -> None:
        """Warn about what changed since the last warning, unless that one is too recent
        (then a later call, after each batch and every few seconds, sums it up)."""
        now = time.monotonic()
        if self._last is not None and now - self._last < REPORT_INTERVAL:
            return
        new = self.counts.minus(self._reported)
        period = None if self._last is None else round(now - self._last, 1)
        warned = False
        if new.invalid or new.unknown or new.over_ids or new.failed or new.dropped:
            self.log.warning(
                "log events not filed normally",
                invalid=new.invalid,
                unknown=new.unknown,
                over_max_ids=new.over_ids,
                unknown_ids=sorted(self.unknown_ids),
                failed=new.failed,
                dropped=new.dropped,
                period_s=period,
            )
            warned = True
        if new.pruned_files:
            self.log.warning(
                "log files deleted to stay under max_total_bytes",
                files=new.pruned_files,
                bytes=new.pruned_bytes,
                max_total_bytes=self.max_total_bytes,
                period_s=period,
            )
            warned = True
        if warned:
            self._last = now
            self.unknown_ids.clear()
        self._reported = Counts(**{f.name: getattr(self.counts, f.name) for f in fields(Counts)})
