"""The JSON-lines files of the logging operator: classify, write, rotate, prune, cap."""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

from eeveepy.errors import EnvelopeError, SubjectError
from eeveepy.protocol.codec import EnvelopeDecoder, EnvelopeEncoder, dead_letter
from eeveepy.protocol.models import LogRecord
from eeveepy.protocol.subjects import validate_operator_id

from .disk import DiskFile, prune_order, scan
from .settings import BUCKETS, INVALID_NAME, UNKNOWN_NAME, LoggingSettings, resolve_directory

_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_WRITE_BUFFER: Final = 64 * 1024
SAMPLE_IDS: Final = 5
"""Unknown ids named in a :class:`BatchResult` (and so in a warning), at most."""


@dataclass
class BatchResult:
    """What :meth:`LogFiles.write_batch` did with a batch."""

    written: int = 0
    """Events written to an operator's file."""
    invalid: int = 0
    """Events written to ``_invalid.jsonl``."""
    unknown: int = 0
    """Events written to ``_unknown.jsonl``: their operator id is not a configured one."""
    over_ids: int = 0
    """Events written to ``_unknown.jsonl`` because ``max_ids`` ids have files already."""
    unknown_ids: set[str] = field(default_factory=set)
    """Some of the ids filed under ``_unknown`` (at most :data:`SAMPLE_IDS`)."""
    pruned_files: int = 0
    """Files deleted to stay under ``max_total_bytes``."""
    pruned_bytes: int = 0
    """Their size."""
    failed: list[int] = field(default_factory=list)
    """Indexes of the events that could not be written (to be retried)."""
    error: str | None = None
    """The first I/O error met, if any."""


@dataclass
class Pruned:
    """What :meth:`LogFiles.prune` deleted."""

    old: int = 0
    """Files deleted for their age or beyond ``backups``."""
    over_cap: int = 0
    """Files deleted to stay under ``max_total_bytes``."""
    over_cap_bytes: int = 0


@dataclass
class _OpenFile:
    handle: BinaryIO
    size: int
    unflushed: list[int] = field(default_factory=list)  # batch indexes written since the flush


class LogFiles:
    """The JSON-lines files of one directory: classify, write, rotate, prune, cap.

    Not thread-safe: use it from one thread at a time (the operator uses one worker thread).
    Build it with :meth:`open`, which creates the directory.
    """

    def __init__(
        self,
        directory: Path,
        *,
        receiver: str,
        max_bytes: int,
        backups: int,
        max_age_days: float,
        max_total_bytes: int,
        max_ids: int = 256,
        bucket_backups: int = 1,
        fsync: bool = False,
        max_open_files: int = 32,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.backups = backups
        self.max_age_s = max_age_days * 86400.0
        self.max_total_bytes = max_total_bytes
        self.max_ids = max_ids
        self.bucket_backups = bucket_backups
        self.fsync = fsync
        self.max_open_files = max_open_files
        self._receiver = receiver
        self._decoder = EnvelopeDecoder(LogRecord)
        self._encoder = EnvelopeEncoder(receiver)
        self._files: OrderedDict[str, _OpenFile] = OrderedDict()
        self._result = BatchResult()
        self.total = 0
        """Bytes in our files (what is buffered included)."""
        self._ids: set[str] = set()  # operator ids with files in the directory
        self._rescan()

    @classmethod
    def open(cls, settings: LoggingSettings, *, data_dir: Path, receiver: str) -> LogFiles:
        """Files as ``settings`` say, the directory created (mode 0700) if missing."""
        directory = resolve_directory(settings, data_dir)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return cls(
            directory,
            receiver=receiver,
            max_bytes=settings.max_bytes,
            backups=settings.backups,
            max_age_days=settings.max_age_days,
            max_total_bytes=settings.max_total_bytes,
            max_ids=settings.max_ids,
            bucket_backups=settings.bucket_backups,
            fsync=settings.fsync,
            max_open_files=settings.max_open_files,
        )

    def path(self, name: str, index: int = 0) -> Path:
        """``<directory>/<name>.jsonl``, or its rotated file number ``index``."""
        return self.directory / (f"{name}.jsonl.{index}" if index else f"{name}.jsonl")

    def backups_of(self, name: str) -> int:
        """Rotated files kept of ``name``."""
        return self.bucket_backups if name in BUCKETS else self.backups

    @property
    def ids(self) -> frozenset[str]:
        """The operator ids that have files of their own in the directory."""
        return frozenset(self._ids)

    # -- writing -------------------------------------------------------------------------------

    def write_batch(self, items: Sequence[tuple[str, bytes]], known: Set[str]) -> BatchResult:
        """Write ``(subject, payload)`` pairs, each to its file, then flush them all.

        An event whose operator id is not in ``known`` goes to ``_unknown.jsonl``.
        """
        self._result = result = BatchResult()
        kinds: list[str] = []
        for index, (subject, payload) in enumerate(items):
            claimed, line = self.classify(subject, payload)
            name, kind = self._route(claimed, known)
            if name == UNKNOWN_NAME and len(result.unknown_ids) < SAMPLE_IDS:
                result.unknown_ids.add(claimed)
            kinds.append(kind)
            try:
                self._write(name, line, index)
            except OSError as exc:
                self._failed([index], exc)
        self.flush()
        failed = set(result.failed)
        result.failed = sorted(failed)
        counts = Counter(kind for index, kind in enumerate(kinds) if index not in failed)
        result.written = counts["written"]
        result.invalid = counts["invalid"]
        result.unknown = counts["unknown"]
        result.over_ids = counts["over_ids"]
        return result

    def _route(self, name: str, known: Set[str]) -> tuple[str, str]:
        """``(file stem, kind of filing)`` for an event classified as ``name``."""
        if name == INVALID_NAME:
            return name, "invalid"
        if name not in known:
            return UNKNOWN_NAME, "unknown"
        if name not in self._ids:
            # Files of ids no longer known (left from earlier) do not count: they only shrink.
            if len(self._ids) >= self.max_ids and len(self._ids & known) >= self.max_ids:
                return UNKNOWN_NAME, "over_ids"
            self._ids.add(name)
        return name, "written"

    def classify(self, subject: str, payload: bytes) -> tuple[str, bytes]:
        """``(file stem, line)`` for a payload received on ``subject``: the stem is the
        record's operator id, or ``_invalid`` for what is not a valid log envelope."""
        try:
            env = self._decoder.decode(payload, subject)
        except EnvelopeError as exc:
            return INVALID_NAME, self._invalid_line(subject, exc.reason, payload)
        name = env.body.operator
        try:
            validate_operator_id(name)
        except SubjectError as exc:
            return INVALID_NAME, self._invalid_line(subject, str(exc), payload)
        return name, _one_line(payload)

    def _invalid_line(self, subject: str, reason: str, payload: bytes) -> bytes:
        letter = dead_letter(subject, reason, self._receiver, payload, limit=len(payload))
        return self._encoder.encode(letter)[1] + b"\n"

    def _write(self, name: str, line: bytes, index: int) -> None:
        f = self._open(name)
        if f.size and f.size + len(line) > self.max_bytes:
            f = self._rotate(name)
        f.handle.write(line)
        f.size += len(line)
        self.total += len(line)
        f.unflushed.append(index)
        if self.total > self.max_total_bytes:
            self._cap(keep=name)

    def _open(self, name: str) -> _OpenFile:
        f = self._files.get(name)
        if f is not None:
            self._files.move_to_end(name)
            return f
        while len(self._files) >= self.max_open_files:
            _, oldest = self._files.popitem(last=False)
            self._close(oldest)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _CLOEXEC
        fd = os.open(self.path(name), flags, 0o600)
        try:
            size = os.fstat(fd).st_size
            handle = os.fdopen(fd, "ab", buffering=_WRITE_BUFFER)
        except BaseException:
            os.close(fd)
            raise
        f = self._files[name] = _OpenFile(handle, size)
        return f

    def _rotate(self, name: str) -> _OpenFile:
        """Close ``name``'s file, shift the rotated ones (dropping the oldest), open anew."""
        f = self._files.pop(name)
        self._close(f)
        base = self.path(name)
        backups = self.backups_of(name)
        if backups == 0:
            self._unlink(base)
        else:
            self._unlink(self.path(name, backups))
            for i in range(backups - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.path(name, i), self.path(name, i + 1))
            os.replace(base, self.path(name, 1))
        return self._open(name)

    def _unlink(self, path: Path | str) -> int:
        """Delete one of our files; its size (0 if it was not there)."""
        try:
            size = os.lstat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            return 0
        self.total = max(self.total - size, 0)
        return size

    def flush(self) -> None:
        """Flush (and fsync, if asked) every file written to since the last flush."""
        for name, f in list(self._files.items()):
            if not f.unflushed:
                continue
            try:
                f.handle.flush()
                if self.fsync:
                    os.fsync(f.handle.fileno())
            except OSError as exc:
                self._failed(f.unflushed, exc)
                self._files.pop(name, None)
                with contextlib.suppress(OSError):
                    f.handle.close()
            f.unflushed = []

    def _close(self, f: _OpenFile) -> None:
        try:
            f.handle.flush()
            if self.fsync and f.unflushed:
                os.fsync(f.handle.fileno())
        except OSError as exc:
            self._failed(f.unflushed, exc)
        finally:
            f.unflushed = []
            with contextlib.suppress(OSError):
                f.handle.close()

    def _failed(self, indexes: list[int], exc: OSError) -> None:
        self._result.failed.extend(indexes)
        if self._result.error is None:
            self._result.error = str(exc)

    def close(self) -> None:
        """Flush and close every file."""
        while self._files:
            _, f = self._files.popitem(last=False)
            self._close(f)

    # -- pruning -------------------------------------------------------------------------------

    def _rescan(self) -> list[DiskFile]:
        """Our files as on disk now (the open ones with what is buffered, and as new); counts
        :attr:`total` and the ids with files anew."""
        now = time.time()
        found: list[DiskFile] = []
        for f in scan(self.directory):
            opened = self._files.get(f.stem) if not f.index else None
            if opened is not None:
                f = DiskFile(f.path, f.stem, 0, opened.size, now)
            found.append(f)
        self.total = sum(f.size for f in found)
        self._ids = {f.stem for f in found if f.stem not in BUCKETS}
        return found

    def _cap(self, keep: str | None) -> None:
        """Delete the oldest files (rotated first) until the total is back under the cap, less
        half a file so that this happens once per half file written, not once per event."""
        files = self._rescan()
        if self.total <= self.max_total_bytes:
            return
        target = self.max_total_bytes - self.max_bytes // 2
        left = Counter(f.stem for f in files)
        for f in prune_order(files, keep):
            if self.total <= target:
                break
            if not f.index:
                opened = self._files.pop(f.stem, None)
                if opened is not None:
                    self._close(opened)
            try:
                size = self._unlink(f.path)
            except OSError:
                continue
            self._result.pruned_files += 1
            self._result.pruned_bytes += size
            left[f.stem] -= 1
            if not left[f.stem]:
                self._ids.discard(f.stem)

    def prune(self, now: float | None = None) -> Pruned:
        """Delete rotated files beyond their backups, files not written to for
        ``max_age_days``, then the oldest files while over ``max_total_bytes``."""
        cutoff = (time.time() if now is None else now) - self.max_age_s
        pruned = Pruned()
        for f in self._rescan():
            if not f.index and f.stem in self._files:
                continue  # open: being written
            if f.mtime < cutoff or f.index > self.backups_of(f.stem):
                try:
                    self._unlink(f.path)
                except OSError:
                    continue
                pruned.old += 1
        self._result = result = BatchResult()
        self._cap(keep=None)
        pruned.over_cap, pruned.over_cap_bytes = result.pruned_files, result.pruned_bytes
        self._rescan()
        return pruned


def _one_line(payload: bytes) -> bytes:
    """A valid JSON payload as one line: line breaks can only be whitespace in valid JSON."""
    line = payload.strip()
    if b"\n" in line or b"\r" in line:
        line = line.replace(b"\r", b" ").replace(b"\n", b" ")
    return line + b"\n"
