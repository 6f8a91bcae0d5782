"""The live status block `eevee up` keeps at the bottom of a terminal.

One line per operator (state in colour, pid, uptime, restarts, last ping, ``DEGRADED: …`` when
the operator reports a problem), redrawn in place; log lines written through
:meth:`LiveStatus.write` appear above it, so logs and the status never garble each other, and
it is erased when ``eevee up`` ends. Used only when the output is a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable, Sequence
from typing import TextIO

from eeveepy.protocol.models import Health, OperatorStatus

_COLORS = {
    "RUNNING": "\033[32m",
    "STARTING": "\033[36m",
    "HALTED": "\033[33m",
    "BACKOFF": "\033[33m",
    "STOPPING": "\033[36m",
    "STOPPED": "\033[2m",
    "EXITED": "\033[2m",
    "FATAL": "\033[1;31m",
}
_RESET = "\033[0m"


def _bytes(n: int | None) -> str:
    return "-" if n is None else f"{n / (1024 * 1024):.1f}M"


def ps_table(operators: Sequence[OperatorStatus], color: bool, *, hosts: bool = False) -> str:
    """The ``eevee ps`` table: aligned columns, the state coloured on a terminal; with
    ``hosts``, a HOST column (the supervisor) after the id, and standbys as ``STANDBY``."""
    rows: list[tuple[str, ...]] = [
        ("ID", "STATE", "PID", "UPTIME", "RESTARTS", "RSS", "CPU%", "NICE", "PING", "")
    ]
    for op in operators:
        rows.append(
            (
                op.id,
                "STANDBY" if op.standby else op.state,
                str(op.pid or "-"),
                _uptime(op.uptime_s),
                str(op.restarts),
                _bytes(op.rss_bytes),
                "-" if op.cpu_percent is None else f"{op.cpu_percent:.1f}",
                "-" if op.nice is None else str(op.nice),
                "-" if op.ping_ms is None else f"{op.ping_ms:.1f}ms",
                _note(op),
            )
        )
    if hosts:
        rows = [
            (r[0], "HOST" if n == 0 else operators[n - 1].host, *r[1:]) for n, r in enumerate(rows)
        ]
    state = 2 if hosts else 1
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        if color and n > 0 and row[state] in _COLORS:
            cells[state] = f"{_COLORS[row[state]]}{cells[state]}{_RESET}"
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def _note(op: OperatorStatus) -> str:
    """The last column: ``DEGRADED: <problem>`` when the operator says so, then the message."""
    parts = [f"DEGRADED: {op.problem}"] if op.health is Health.DEGRADED else []
    if op.message:
        parts.append(op.message)
    return "; ".join(parts)


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def status_lines(operators: Sequence[OperatorStatus], width: int, color: bool = True) -> list[str]:
    """The status block's lines (no trailing newlines), each cut to ``width``."""
    if not operators:
        return ["eevee: no operators configured (add [operators.<id>] tables)"]
    idw = max(len(op.id) for op in operators)
    lines = []
    for op in operators:
        ping = "-" if op.ping_ms is None else f"{op.ping_ms:.1f}ms"
        head = f"{op.id.ljust(idw)}  "
        text = (
            f"{head}{op.state.ljust(8)}  pid {op.pid or '-'!s:>7}  up {_uptime(op.uptime_s):>6}"
            f"  restarts {op.restarts:<3} ping {ping:>8}"
        )
        if note := _note(op):
            text += f"  {note}"
        if len(text) > width:
            text = text[: max(width - 1, 0)] + "…"
        if color and op.state in _COLORS and len(text) >= len(head) + len(op.state):
            start = len(head)
            end = start + len(op.state)
            text = f"{text[:start]}{_COLORS[op.state]}{text[start:end]}{_RESET}{text[end:]}"
        lines.append(text)
    return lines


class LiveStatus:
    """A file-like object for log output that keeps a redrawn status block below it.

    Log output is written above the block a whole line at a time (``print`` writes the text
    and its newline separately: a half line must not be redrawn over). :meth:`stop` erases the
    block for good, so the last thing on screen is the supervisor's own last line (``down``),
    not a block describing operators that are gone.
    """

    def __init__(self, out: TextIO, source: Callable[[], Sequence[OperatorStatus]]) -> None:
        self._out = out
        self._source = source
        self._drawn = 0
        self._partial = ""
        self._stopped = False
        self._task: asyncio.Task[None] | None = None

    def _clear(self) -> None:
        if self._drawn:
            self._out.write(f"\033[{self._drawn}F\033[J")
            self._drawn = 0

    def _draw(self) -> None:
        if self._stopped:
            return
        width = shutil.get_terminal_size((100, 24)).columns
        lines = status_lines(self._source(), width)
        self._out.write("\n".join(lines) + "\n")
        self._drawn = len(lines)

    def write(self, text: str) -> int:
        """Write log output above the status block (a closed terminal is ignored)."""
        whole, _, self._partial = (self._partial + text).rpartition("\n")
        if not whole and not _:
            return len(text)  # no complete line yet
        with contextlib.suppress(OSError, ValueError):
            self._clear()
            self._out.write(whole + "\n")
            self._draw()
            self._out.flush()
        return len(text)

    def flush(self) -> None:
        """Flush the terminal."""
        self._out.flush()

    def isatty(self) -> bool:
        """Whether the underlying stream is a terminal (for colour decisions)."""
        return self._out.isatty()

    def refresh(self) -> None:
        """Redraw the status block (a closed terminal is ignored)."""
        with contextlib.suppress(OSError, ValueError):
            self._clear()
            self._draw()
            self._out.flush()

    def start(self, interval: float = 0.5) -> None:
        """Redraw every ``interval`` seconds until :meth:`stop`."""

        async def loop() -> None:
            while True:
                self.refresh()
                await asyncio.sleep(interval)

        self._task = asyncio.get_running_loop().create_task(loop(), name="live-status")

    async def stop(self) -> None:
        """Stop redrawing and erase the block; later output is written as it comes."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._stopped = True
        with contextlib.suppress(OSError, ValueError):
            self._clear()
            if self._partial:
                self._out.write(self._partial + "\n")
                self._partial = ""
            self._out.flush()
