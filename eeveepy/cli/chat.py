"""``eevee chat``: talk to the bot from a terminal, as a user of the ``console`` platform.

On a terminal it is a REPL (readline history in ``<state dir>/chat_history``; other users of
the room and their replies are shown too, like in a chat room). With standard input not a
terminal it is a script runner: one message per line, each followed by the replies that carry
its trace id (the router carries it), printed one text per line; a line nothing answers
within ``--timeout`` is reported on stderr (and with ``--strict`` makes the exit code 1).

The session on the bus (what is published where, which replies are the session's) is
:mod:`eeveepy.console`; the terminal (how replies look, the prompt, the history) is
:mod:`eeveepy.cli.terminal`. The bus is served on an event loop in a background thread, so
replies keep arriving while the main thread waits in readline (where Ctrl-C and terminal
handling work as usual).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import io
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, Final, TypeVar

from eeveepy.bus.ipc import Ipc
from eeveepy.cli.terminal import HISTORY_FILE, Terminal, load_readline, save_history
from eeveepy.config import find_config, load_config
from eeveepy.console import (
    PLATFORM,
    SOURCE,
    ChatSession,
    ConsoleSettings,
    console_settings,
    session_user,
)
from eeveepy.errors import ConfigError, EeveeError
from eeveepy.paths import Paths

__all__ = ["check_args", "run_chat"]

T = TypeVar("T")

QUIET: Final = 0.3
"""Scripted: seconds without a further reply after which a line counts as answered."""
REPL_WAIT: Final = 0.5
"""REPL: seconds to hold the next prompt back for the first reply (later ones still show)."""
REPL_QUIET: Final = 0.1
"""REPL: seconds without a further reply before the next prompt."""
PROMPT: Final = "you> "
REPL_HELP: Final = """\
Type a line to say it in the room; the bot answers commands such as !help.
  /help      this help
  /quit      leave (also /exit, Ctrl-D)
  //text     say a line that starts with /
Ctrl-C abandons the line being typed."""


def _login_name() -> str | None:
    try:
        return getpass.getuser() or None
    except Exception:  # no login name to be found (e.g. an unknown uid in a container)
        return None


class _BusThread:
    """An event loop on a daemon thread, where everything touching the bus runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="eevee-chat-bus", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result here."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        """Cancel what is left on the loop, stop it and close it (bounded)."""

        async def cancel_all() -> None:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=1)

        with contextlib.suppress(Exception):
            self.run(cancel_all(), timeout=2)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=2)
        if not self.loop.is_running():
            self.loop.close()


Connect = Callable[[argparse.Namespace], Coroutine[Any, Any, tuple[Any, Any, dict[str, str]]]]


def check_args(args: argparse.Namespace, name: str) -> str | None:
    """What is wrong with ``eevee chat``'s arguments (``name``: the user's, resolved), or None."""
    if not name.strip():
        return "--user must not be empty"
    if not args.room:
        return "--room must not be empty"
    if not args.timeout > 0:
        return "--timeout must be positive"
    return None


class _Link:
    """The chat session on the bus, which the REPL can open again when the bus went away."""

    def __init__(self, bus: _BusThread, client: Connect, args: argparse.Namespace, name: str):
        self.bus, self.client, self.args, self.name = bus, client, args, name
        self.settings = _settings(args)
        self.nc: Any = None
        self.session: ChatSession | None = None

    def open(self) -> ChatSession:
        """Connect (the running system's bus, from its state file) and make a session."""
        self.nc, cli_ipc, _ = self.bus.run(self.client(self.args), timeout=30)
        ipc = Ipc(cli_ipc.subjects, SOURCE, dlq=False)
        self.bus.run(ipc.attach(self.nc))
        self.session = ChatSession(
            ipc,
            user=session_user(self.name.strip(), account=_login_name()),
            network=self.settings.network,
            room=self.args.room,
            private=self.args.private,
            bot_name=self.settings.bot_name,
        )
        return self.session

    def close(self) -> None:
        """Part and disconnect (bounded; what is already gone is left alone)."""
        session, nc, self.session, self.nc = self.session, self.nc, None, None
        if session is not None:
            with contextlib.suppress(Exception):
                self.bus.run(session.close(), timeout=3)
        if nc is not None:
            with contextlib.suppress(Exception):
                self.bus.run(nc.close(), timeout=3)


def run_chat(args: argparse.Namespace, client: Connect, paths: Paths) -> int:
    """``eevee chat``: returns the exit code. ``client`` connects to the running supervisor's
    bus (the CLI's ``_client``); ``paths`` are the installation's (history goes in its
    state dir)."""
    name = args.user if args.user is not None else os.environ.get("USER") or "you"
    problem = check_args(args, name)
    if problem is not None:
        print(f"eevee: {problem}", file=sys.stderr)
        return 2
    interactive = sys.stdin.isatty()
    color = interactive and sys.stdout.isatty() and not args.json and not os.environ.get("NO_COLOR")
    bus = _BusThread()
    link = _Link(bus, client, args, name)
    try:
        session = link.open()
        term = Terminal(
            sys.stdout,
            bot=link.settings.bot_name,
            json_lines=args.json,
            color=color,
            interactive=interactive,
            mark_private=not args.private,
        )
        if interactive:
            return _repl(link, term, paths.state_dir / HISTORY_FILE)
        bus.run(session.start())
        lines = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
        return _scripted(bus, session, term, lines, args.timeout, strict=args.strict)
    finally:
        link.close()
        bus.close()


def _settings(args: argparse.Namespace) -> ConsoleSettings:
    """The console settings of the configuration in use; defaults when there is none."""
    try:
        path = find_config(Path(args.config) if getattr(args, "config", None) else None)
        if path is None:
            return ConsoleSettings()
        return console_settings(load_config(path))
    except ConfigError:
        return ConsoleSettings()


def _scripted(
    bus: _BusThread,
    session: ChatSession,
    term: Terminal,
    lines: Iterable[str],
    timeout: float,
    *,
    strict: bool = False,
) -> int:
    """One message per line, each followed by its replies. A line nothing answers is said on
    stderr (many are answered by nothing: ``carol++``); with ``strict`` it makes the exit
    code 1."""
    missed = 0
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        try:
            trace = bus.run(session.say(line))
        except Exception:
            if not session.ipc.nc.is_closed:
                raise
            term.write("eevee: the bus connection is closed; did `eevee up` stop?", sys.stderr)
            return 1
        got = bus.run(session.wait_replies(trace, timeout=timeout, quiet=QUIET, emit=term.show))
        if not got:
            term.write(f"no reply to: {line}", sys.stderr)
            missed += 1
    return 1 if missed and strict else 0


def _repl(link: _Link, term: Terminal, history: Path) -> int:
    """The interactive loop: prompt, say, show the replies; /quit or Ctrl-D to leave.

    When the bus goes away (``eevee down``, a restart), the REPL says so and connects again
    (Ctrl-C gives up); a line that could not be sent is sent once connected."""
    readline = load_readline(history)
    loaded = readline.get_current_history_length() if readline is not None else 0
    term.readline = readline
    session = link.session
    assert session is not None
    _enter(link, session, term)
    where = f"privately to {session.bot_name}" if session.private else f"in {session.room}"
    term.note(
        f"eevee chat: {session.user.name} {where} ({PLATFORM}/{session.network}). "
        "`!help` lists the bot's commands, /help the chat's; Ctrl-D leaves."
    )
    try:
        while True:
            try:
                line = term.input(PROMPT)
            except EOFError:
                term.write("")
                return 0
            except KeyboardInterrupt:
                term.write("")
                continue
            text = line.strip()
            if not text:
                continue
            if text.startswith("/") and not text.startswith("//"):
                word = text.split()[0].lower()
                if word in ("/quit", "/exit", "/q"):
                    return 0
                if word in ("/help", "/?"):
                    term.note(REPL_HELP)
                else:
                    term.note(f"unknown command {word}; /help lists them")
                continue
            if text.startswith("//"):
                line = line.lstrip()[1:]
            while True:
                sent = False
                try:
                    trace = link.bus.run(session.say(line))
                    sent = True
                    link.bus.run(
                        session.wait_replies(
                            trace, timeout=REPL_WAIT, quiet=REPL_QUIET, emit=term.show
                        )
                    )
                except KeyboardInterrupt:
                    term.write("")
                except EeveeError as exc:
                    if not session.ipc.nc.is_closed:
                        term.write(f"eevee: {exc}", sys.stderr)
                        break
                except Exception:
                    if not session.ipc.nc.is_closed:
                        raise
                if not session.ipc.nc.is_closed:
                    break
                reopened = _reconnect(link, term)
                if reopened is None:
                    return 1
                session = reopened
                if sent:
                    break
    finally:
        if readline is not None:
            save_history(readline, history, loaded)


def _enter(link: _Link, session: ChatSession, term: Terminal) -> None:
    session.show = term.show
    link.bus.run(session.start(watch_room=True))
    link.bus.run(session.join())


def _reconnect(link: _Link, term: Terminal) -> ChatSession | None:
    """Connect again after the bus went away, every second until it works; None when the user
    gives up (Ctrl-C)."""
    link.close()
    term.write("eevee: the bus connection is closed; connecting again (Ctrl-C gives up)")
    try:
        while True:
            try:
                session = link.open()
                _enter(link, session, term)
            except EeveeError:
                link.close()
                time.sleep(1.0)
                continue
            term.write("eevee: connected again")
            return session
    except KeyboardInterrupt:
        term.write("")
        return None
