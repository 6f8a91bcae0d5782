"""The logging operator's files as found on disk: which are ours, and which go first."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from eeveepy.errors import SubjectError
from eeveepy.protocol.subjects import validate_operator_id

from .settings import BUCKETS

_NAME_RE: Final = re.compile(r"(?P<stem>.+)\.jsonl(?:\.(?P<n>[1-9][0-9]{0,5}))?")


@dataclass(frozen=True)
class DiskFile:
    """One of our files: ``<stem>.jsonl`` (``index`` 0) or its rotated ``<stem>.jsonl.<index>``."""

    path: str
    stem: str
    index: int
    size: int
    mtime: float


def is_stem(stem: str) -> bool:
    """Whether ``<stem>.jsonl`` can be one of our files: an operator id or a bucket."""
    if stem in BUCKETS:
        return True
    try:
        validate_operator_id(stem)
    except SubjectError:
        return False
    return True


def parse_name(name: str) -> tuple[str, int] | None:
    """``(stem, index)`` of a file name that is ours, else None (other files are left alone)."""
    match = _NAME_RE.fullmatch(name)
    if match is None or not is_stem(match["stem"]):
        return None
    return match["stem"], int(match["n"] or 0)


def scan(directory: Path) -> list[DiskFile]:
    """Our regular files in ``directory`` (symbolic links and other files are not ours)."""
    found: list[DiskFile] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return found
    for entry in entries:
        parsed = parse_name(entry.name)
        if parsed is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        found.append(DiskFile(entry.path, parsed[0], parsed[1], st.st_size, st.st_mtime))
    return found


def prune_order(files: Sequence[DiskFile], keep: str | None) -> list[DiskFile]:
    """The order files are deleted in to free space: rotated files first, then the current
    files of other ids; oldest (by modification time) first in each; ``keep``'s current file
    (the one being written) never."""
    rotated = sorted((f for f in files if f.index), key=lambda f: (f.mtime, -f.index))
    current = sorted((f for f in files if not f.index and f.stem != keep), key=lambda f: f.mtime)
    return rotated + current
