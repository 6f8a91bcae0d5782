"""The ids of the ``chat.out`` messages a connector has sent, kept across its restarts.

A message's stored copy is acknowledged once it was sent (see
:mod:`eeveepy.connector.outbox`), but that copy reaches the connector a little after the fast
one, and the faster the connector answers, the more messages are sent and not acknowledged
yet at any moment. A connector killed then would get them all again and send them twice. So
the outbox writes each id here as soon as the message is sent (an append of one line, no
fsync: it survives the process, which is what dies), and a restarted connector skips, and
acknowledges, the redeliveries of what it had sent.

The file keeps the last :data:`KEEP` ids: it is rewritten with them once it holds twice as
many lines.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from pathlib import Path
from typing import Any, Final

__all__ = ["KEEP", "SentLog"]

KEEP: Final = 2048
"""Ids remembered (far more than a connector sends between two acknowledgements)."""


class SentLog:
    """Ids sent, in memory and appended to ``path`` (None: in memory only)."""

    def __init__(self, path: Path | None, log: Any = None) -> None:
        self._path = path
        self._log = log
        self._ids: deque[str] = deque(maxlen=KEEP)
        self._known: set[str] = set()
        self._fd: int | None = None
        self._lines = 0

    def open(self) -> None:
        """Read what an earlier process sent, and start appending (a file that cannot be
        read or written is logged and done without: a restart may then send some twice)."""
        self.close()
        if self._path is None:
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                text = self._path.read_text(encoding="utf-8", errors="replace")
                for line in text.splitlines()[-KEEP:]:
                    self._remember(line.strip())
            self._compact()
        except OSError as exc:
            self._fd = None
            if self._log is not None:
                self._log.warning("cannot keep the ids of sent messages", error=str(exc))

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._known

    def add(self, msg_id: str) -> None:
        """``msg_id`` was sent."""
        self._remember(msg_id)
        if self._fd is None:
            return
        try:
            os.write(self._fd, msg_id.encode() + b"\n")
            self._lines += 1
            if self._lines >= 2 * KEEP:
                self._compact()
        except OSError as exc:
            self.close()
            if self._log is not None:
                self._log.warning("cannot keep the ids of sent messages", error=str(exc))

    def close(self) -> None:
        """Stop appending (what is in memory stays)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _remember(self, msg_id: str) -> None:
        if not msg_id or msg_id in self._known:
            return
        if len(self._ids) == KEEP:
            self._known.discard(self._ids[0])
        self._ids.append(msg_id)
        self._known.add(msg_id)

    def _compact(self) -> None:
        """Rewrite the file with the ids remembered (atomically) and append to it."""
        assert self._path is not None
        self.close()
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text("".join(i + "\n" for i in self._ids), encoding="utf-8")
        os.replace(tmp, self._path)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND)
        self._lines = len(self._ids)
