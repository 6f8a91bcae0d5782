"""The running supervisor's state file, ``<state_dir>/supervisor.json`` (mode 0600).

It is how tools such as the ``eevee`` CLI find the supervisor and its bus: ``supervisor``,
``pid``, ``url``, ``user`` and ``password`` (the CLI's own bus credentials), ``prefix``,
``config`` and ``started`` (see "Supervisor subjects" in docs/protocol.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from eeveepy.errors import SupervisorError
from eeveepy.paths import Paths

__all__ = ["read_state", "remove_state", "write_state"]


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Replace the state file at once, readable by its owner only (it holds credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=2)
    tmp.replace(path)


def remove_state(path: Path) -> None:
    """Remove the state file if this process wrote it (another supervisor's is left alone)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if data.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def read_state(paths: Paths) -> dict[str, Any]:
    """The running supervisor's state file, or :class:`SupervisorError` when none is running."""
    path = paths.state_file
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise SupervisorError(
            f"no running eevee found (no state file at {path}); start one with `eevee up`"
        ) from None
    except (OSError, ValueError) as exc:
        raise SupervisorError(f"cannot read the state file {path}: {exc}") from None
    pid = data.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        raise SupervisorError(
            f"no running eevee found (the state file {path} names pid {pid}, which is gone); "
            "start one with `eevee up`"
        )
    return data


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
