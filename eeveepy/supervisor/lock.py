"""One supervisor per state directory: an exclusive ``flock`` on ``<state_dir>/supervisor.lock``.

Two ``eevee up`` on one state directory would share its nats-server configuration, JetStream
store, state file and operators' directories: the second would rewrite them under the first
and delete the state file on exit, leaving the first running and unreachable. The lock is
taken before anything else is touched and held for the supervisor's life; the kernel releases
it when the process ends, however it ends, so a killed supervisor leaves no stale lock. The
file also says who holds it (pid, since when, which configuration), for the refusal message.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eeveepy.errors import AlreadyRunningError

__all__ = ["LOCK_NAME", "StateDirLock"]

LOCK_NAME = "supervisor.lock"
"""The lock file's name in the state directory."""


class StateDirLock:
    """The exclusive lock of one state directory (see the module docstring)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this process holds the lock."""
        return self._fd is not None

    def acquire(self, config: Path | None = None) -> None:
        """Take the lock, or raise :class:`AlreadyRunningError` naming the holder."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise AlreadyRunningError(self._refusal(holder)) from None
        except BaseException:
            os.close(fd)
            raise
        holder = {
            "pid": os.getpid(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": str(config) if config else None,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (the file stays: removing it would race a new holder). Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor releases the flock

    def _refusal(self, holder: dict[str, Any]) -> str:
        pid = holder.get("pid", "?")
        since = holder.get("since", "an unknown time")
        config = holder.get("config")
        of = f" with {config}" if config else ""
        return (
            f"another eevee up (pid {pid}, running since {since}{of}) holds the state directory"
            f" {self.path.parent}; stop it with `eevee down`, or give this one a state directory"
            " of its own ([paths] state_dir, or XDG_STATE_HOME)"
        )


def _read(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
