"""The terminal of ``eevee chat``: how replies look, writing around the prompt, and the
readline history kept in ``<state dir>/chat_history``."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, Final, TextIO

from eeveepy.protocol.models import (
    ChatEvent,
    ChatEventType,
    ChatMessage,
    Envelope,
    MessageStyle,
    OutgoingMessage,
)

__all__ = [
    "HISTORY_FILE",
    "HISTORY_LENGTH",
    "Terminal",
    "format_reply",
    "load_readline",
    "save_history",
]

HISTORY_FILE: Final = "chat_history"
HISTORY_LENGTH: Final = 1000

_BOLD_BOT = "\033[1;36m"
_BOLD_USER = "\033[1;33m"
_DIM = "\033[2m"
_RESET = "\033[0m"


def format_reply(out: OutgoingMessage, bot: str, *, color: bool = False, mark: bool = False) -> str:
    """A reply as the REPL shows it: ``eevee> text`` (``* eevee text`` for an action,
    ``-eevee- text`` for a notice), one label per line; ``mark`` tags private replies
    (``eevee (private)> text``)."""
    private = " (private)" if mark and out.private else ""
    if out.style is MessageStyle.ACTION:
        label = f"* {bot}{private}"
    elif out.style is MessageStyle.NOTICE:
        label = f"-{bot}-{private}"
    else:
        label = f"{bot}{private}>"
    if color:
        label = f"{_BOLD_BOT}{label}{_RESET}"
    return "\n".join(f"{label} {line}" for line in (out.text.splitlines() or [""]))


class Terminal:
    """Writes to the terminal from both threads; keeps the prompt and the typed text intact."""

    def __init__(
        self,
        out: TextIO,
        *,
        bot: str,
        json_lines: bool,
        color: bool,
        interactive: bool,
        mark_private: bool = True,
        readline: ModuleType | None = None,
    ) -> None:
        self.out = out
        self.bot = bot
        self.json_lines = json_lines
        self.color = color
        self.interactive = interactive
        self.mark_private = mark_private
        self.readline = readline
        self._lock = threading.Lock()
        self._prompt = ""
        self._prompting = False

    def write(self, text: str, stream: TextIO | None = None) -> None:
        """Print ``text`` (a line or several); above the prompt while one is shown."""
        out = stream or self.out
        with self._lock:
            if self._prompting and out is self.out:
                typed = self.readline.get_line_buffer() if self.readline else ""
                out.write(f"\r\033[K{text}\n{self._prompt}{typed}")
            else:
                out.write(text + "\n")
            out.flush()

    def input(self, prompt: str) -> str:
        """Read a line (readline when loaded), remembering that the prompt is shown."""
        with self._lock:
            self._prompt, self._prompting = prompt, True
        try:
            return input(prompt)
        finally:
            with self._lock:
                self._prompting = False

    def note(self, text: str) -> None:
        """A message of the REPL itself (dim)."""
        self.write(f"{_DIM}{text}{_RESET}" if self.color else text)

    def show(self, env: Envelope[Any]) -> None:
        """Show one envelope: a reply, another user's line, a join or a part."""
        if self.json_lines:
            self.write(env.model_dump_json())
            return
        body = env.body
        if isinstance(body, OutgoingMessage):
            if self.interactive:
                self.write(format_reply(body, self.bot, color=self.color, mark=self.mark_private))
            else:
                self.write(body.text)
        elif isinstance(body, ChatMessage):
            label = f"{body.user.name}>"
            if self.color:
                label = f"{_BOLD_USER}{label}{_RESET}"
            self.write("\n".join(f"{label} {line}" for line in (body.text.splitlines() or [""])))
        elif isinstance(body, ChatEvent) and body.user is not None:
            verb = "joined" if body.event is ChatEventType.JOIN else "left"
            self.note(f"* {body.user.name} {verb} {body.room}")


def load_readline(history: Path) -> ModuleType | None:
    """Import readline (line editing) and load the history; None where it is missing."""
    try:
        import readline
    except ImportError:  # pragma: no cover - platforms without readline
        return None
    commands = ["/help", "/quit", "/exit"]

    def complete(text: str, state: int) -> str | None:
        matches = [c for c in commands if c.startswith(text)] if text.startswith("/") else []
        return matches[state] if state < len(matches) else None

    readline.set_completer(complete)
    readline.set_completer_delims(" \t\n")
    readline.parse_and_bind("tab: complete")
    with contextlib.suppress(OSError):
        readline.read_history_file(history)
    return readline


def save_history(readline: ModuleType, history: Path, loaded: int) -> None:
    """Append the lines typed since ``loaded`` entries were in the history, so concurrent
    sessions do not overwrite each other's; keep the last :data:`HISTORY_LENGTH` lines."""
    added = readline.get_current_history_length() - loaded
    if added <= 0:
        return
    try:
        history.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(history, os.O_WRONLY | os.O_CREAT, 0o600))  # what was typed may be secret
        readline.append_history_file(added, history)
        lines = history.read_bytes().splitlines(keepends=True)
        if len(lines) > HISTORY_LENGTH:
            history.write_bytes(b"".join(lines[-HISTORY_LENGTH:]))
    except OSError as exc:
        print(f"eevee: history not saved: {exc}", file=sys.stderr)
