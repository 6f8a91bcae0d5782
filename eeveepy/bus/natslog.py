"""The embedded nats-server's log: what the supervisor reads in it, and how a failure is told.

The server writes its stdout and stderr to one file (see :mod:`eeveepy.bus.natsserver`). The
supervisor reads it to learn the ports the server listens on, whether a configuration reload
was refused, and, when the server fails, to quote its last lines with a hint of what to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from eeveepy.errors import NatsServerError

__all__ = [
    "LISTEN_RE",
    "MONITOR_RE",
    "READY_MARKER",
    "RELOAD_FAILED_RE",
    "ServerLog",
    "Setting",
    "failure",
    "hint",
]

LOG_TAIL_LINES = 10
"""Lines of the log quoted in a failure."""
READY_MARKER = "Server is ready"
LISTEN_RE = re.compile(r"Listening for client connections on \S+:(\d+)\s*$", re.MULTILINE)
MONITOR_RE = re.compile(r"Starting http monitor on \S+:(\d+)\s*$", re.MULTILINE)
# The server's own refusal, at the start of a log line (a client cannot forge that position).
RELOAD_FAILED_RE = re.compile(
    r"^\[\d+\] \S+ \S+ \[ERR\] Failed to reload server configuration: (.*)$", re.MULTILINE
)


class ServerLog:
    """The log file, read from where the current run's lines begin (:attr:`start`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = 0

    def size(self) -> int:
        """Bytes in the file now (0 when there is none)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def read(self, offset: int | None = None) -> str:
        """The log of the current run (from ``offset`` when given)."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.start if offset is None else offset)
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""


@dataclass(frozen=True, slots=True)
class Setting:
    """What a hint may name: where the server was asked to listen and keep its files."""

    host: str
    port: int
    store_dir: Path
    config_path: Path
    log_path: Path


def failure(
    what: str, log: ServerLog, setting: Setting, given: str | None = None
) -> NatsServerError:
    """``what`` went wrong, with a hint (``given``, or one read from the log) and the log's
    last lines."""
    lines = log.read().splitlines()[-LOG_TAIL_LINES:]
    parts = [f"{what}.", f"Hint: {given or hint(lines, setting)}"]
    if lines:
        parts.append(f"Last lines of {log.path}:")
        parts.extend(f"  {line}" for line in lines)
    return NatsServerError("\n".join(parts))


def hint(lines: list[str], setting: Setting) -> str:
    """What to do about the errors in the log's ``lines``."""
    errors = [ln for ln in lines if "[FTL]" in ln or "[ERR]" in ln or "nats-server:" in ln]
    log = "\n".join(errors).lower()
    where = f"{setting.host}:{setting.port}"
    if "address already in use" in log:
        return (
            f"port {setting.port} on {setting.host} is already in use; "
            "choose another port, or use port 0 to let the server pick a free one"
        )
    if "permission denied" in log and "listen" in log:
        return f"not allowed to listen on {where}; use a port above 1023, or port 0"
    if "cannot assign requested address" in log or "no such host" in log:
        return f"{setting.host!r} is not an address of this machine; use 127.0.0.1"
    if "jetstream" in log or "storage" in log:
        return f"JetStream could not use {setting.store_dir}; check it is writable and not in use"
    if "parse error" in log or "config" in log:
        return f"the generated configuration {setting.config_path} was rejected"
    return f"see the full log in {setting.log_path}"
