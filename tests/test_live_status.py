"""``eevee up`` on a terminal: the live status block keeps the supervisor's own lines visible.

``eevee up`` runs on a pseudo-terminal; what it wrote is replayed on a small screen model that
knows what the block uses (cursor to a previous line, erase below), so the test sees what a
user would have on screen: every supervisor line (``up``, a refused reload, ``stopping
operators``, ``down``), and no block left describing operators that are gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

from supervisor_fixtures import EEVEE, System, bash_op

_COLOR = re.compile(r"\x1b\[[0-9;]*m")
_MOVE = re.compile(r"\x1b\[(\d*)([A-Za-z])")


def screen(raw: bytes) -> list[str]:
    """The lines a terminal shows after ``raw`` (colours dropped; no width limit)."""
    text = _COLOR.sub("", raw.decode("utf-8", "replace"))
    lines = [""]
    row = col = 0
    i = 0
    while i < len(text):
        move = _MOVE.match(text, i)
        if move:
            n, code = int(move.group(1) or 1), move.group(2)
            if code == "F":  # to the start of the n-th previous line
                row, col = max(0, row - n), 0
            elif code == "J":  # erase from the cursor to the end of the screen
                lines[row] = lines[row][:col]
                del lines[row + 1 :]
            i = move.end()
            continue
        ch = text[i]
        if ch == "\n":
            row += 1
            col = 0
        elif ch == "\r":
            col = 0
        else:
            while len(lines) <= row:
                lines.append("")
            line = lines[row].ljust(col)
            lines[row] = line[:col] + ch + line[col + 1 :]
            col += 1
        while len(lines) <= row:
            lines.append("")
        i += 1
    return lines


class Terminal:
    """``eevee up`` on a pseudo-terminal of 40 x 160."""

    def __init__(self, system: System) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        self.proc = subprocess.Popen(
            [str(EEVEE), "-c", str(system.config), "up"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**system.env, "TERM": "xterm"},
            cwd=system.root,
            start_new_session=True,
        )
        os.close(slave)
        self.raw = b""

    def read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the other side is closed
            return False
        self.raw += data
        return bool(data)

    def expect(self, wanted: bytes, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while wanted not in self.raw:
            if time.monotonic() >= deadline or not self.read(0.1):
                raise AssertionError(f"{wanted!r} not written; the screen:\n" + self.shown())
            continue

    def wait(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.read(0.05)
        code = self.proc.wait(max(0.1, deadline - time.monotonic()))
        while self.read(0.05) and select.select([self.master], [], [], 0)[0]:
            pass
        return code

    def shown(self) -> str:
        return "\n".join(screen(self.raw))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        with contextlib.suppress(OSError):
            os.close(self.master)


def test_the_status_block_keeps_the_supervisors_lines_visible(tmp_path: Path) -> None:
    system = System(tmp_path / "sys").write({"bash": bash_op(), "bash2": bash_op()})
    term = Terminal(system)
    try:
        term.expect(b"RUNNING  ")  # the block shows the operators running
        system.config.write_text(system.config.read_text() + "[operators.broken]\n")
        term.proc.send_signal(signal.SIGHUP)
        term.expect(b"configuration not reloaded")
        term.proc.send_signal(signal.SIGINT)
        assert term.wait() == 0, term.shown()
        lines = screen(term.raw)
        shown = term.shown()
        for event in ("up", "configuration not reloaded", "stopping operators", "down"):
            assert [line for line in lines if f"] {event} " in line], shown
        assert "press Ctrl-C again" in shown
        assert "no operators configured" not in shown
        # The block is gone: the last line on screen is the supervisor's last word.
        assert [line for line in lines if line.strip()][-1].split("]")[1].split()[0] == "down"
    finally:
        term.close()
        system.stop()
