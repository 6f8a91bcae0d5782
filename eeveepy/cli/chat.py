"""``eevee chat``: talk to the bot from a terminal, as a user of the ``console`` platform.

Each ``eevee chat`` process is one **console session**: the front end of the console
connector. It speaks the connectors' envelopes directly on the bus (see "Console connector"
in docs/protocol.md):

- every line typed is a :class:`~eeveepy.models.ChatMessage` (platform ``console``, network
  ``local``, room ``#console`` or, with ``--private``, the user's own id) published on
  ``{p}.chat.in.console.<network>.<room>`` with ``source`` ``console``;
- the bot's answers are the :class:`~eeveepy.models.OutgoingMessage` envelopes on
  ``{p}.chat.out.console.<network>``. A session shows those addressed to its room and those
  sent privately to its user id, which is unique per session (``<name>-<pid>``), so two
  sessions never see each other's private replies.

On a terminal it is a REPL (readline history in ``<state dir>/chat_history``; other users of
the room and their replies are shown too, like in a chat room). With standard input not a
terminal it is a script runner: one message per line, each followed by the replies that carry
its trace id (the router carries it), printed one text per line; a line nothing answers
within ``--timeout`` is reported on stderr and makes the exit code 1.

The bus is served on an event loop in a background thread, so replies keep arriving while
the main thread waits in readline (where Ctrl-C and terminal handling work as usual).

The ``operators.console`` operator is the connector's resident half (it announces the
``connected`` event and has a place in ``eevee ps``); sessions do not depend on it.
:class:`ConsoleSettings` are its settings, which ``eevee chat`` reads from the configuration
for the network and the bot's name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import re
import sys
import threading
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any, Final, TextIO, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from eeveepy.bus.ipc import Ipc, Subscription
from eeveepy.errors import ConfigError, EeveeError
from eeveepy.protocol.codec import IdFactory
from eeveepy.protocol.models import (
    ChatEvent,
    ChatEventType,
    ChatMessage,
    ChatUser,
    Envelope,
    MessageStyle,
    OutgoingMessage,
)
from eeveepy.protocol.subjects import encode_token

__all__ = [
    "DEFAULT_NETWORK",
    "DEFAULT_ROOM",
    "PLATFORM",
    "SOURCE",
    "ChatSession",
    "ConsoleSettings",
    "console_settings",
    "format_reply",
    "mentions",
    "run_chat",
    "session_user",
]

T = TypeVar("T")

PLATFORM: Final = "console"
"""The platform name of console messages."""
SOURCE: Final = "console"
"""The ``source`` of what sessions publish: they are the console connector's front end."""
DEFAULT_NETWORK: Final = "local"
DEFAULT_ROOM: Final = "#console"
DEFAULT_BOT_NAME: Final = "eevee"
CONSOLE_MODULE: Final = "operators.console"
"""The module of the console operator, whose settings ``eevee chat`` reads."""

QUIET: Final = 0.3
"""Scripted: seconds without a further reply after which a line counts as answered."""
REPL_WAIT: Final = 0.5
"""REPL: seconds to hold the next prompt back for the first reply (later ones still show)."""
REPL_QUIET: Final = 0.1
"""REPL: seconds without a further reply before the next prompt."""
HISTORY_FILE: Final = "chat_history"
HISTORY_LENGTH: Final = 1000

PROMPT: Final = "you> "
REPL_HELP: Final = """\
Type a line to say it in the room; the bot answers commands such as !help.
  /help      this help
  /quit      leave (also /exit, Ctrl-D)
  //text     say a line that starts with /
Ctrl-C abandons the line being typed."""


class ConsoleSettings(BaseModel):
    """Settings of the console connector (``[operators.console] settings``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    network: str = Field(default=DEFAULT_NETWORK, min_length=1)
    """The network name of console messages: ``{p}.chat.in.console.<network>.<room>``."""
    bot_name: str = Field(default=DEFAULT_BOT_NAME, min_length=1)
    """The bot's name on the console: replies are shown as ``<bot_name>> text``, and a line
    naming it is ``mentioned``."""

    @field_validator("bot_name")
    @classmethod
    def _no_blank_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("bot_name must not be blank")
        return value


def console_settings(config: Any) -> ConsoleSettings:
    """The console operator's settings in ``config`` (a :class:`~eeveepy.config.Config`).

    Of the operators running ``operators.console``, an enabled one first and among those the
    id ``console`` first; the defaults when there is none or its settings are invalid (the
    operator itself reports those).
    """
    tables = [op for op in config.operators.values() if op.module == CONSOLE_MODULE]
    tables.sort(key=lambda op: (not op.enabled, op.id != "console"))
    if not tables:
        return ConsoleSettings()
    try:
        return ConsoleSettings.model_validate(tables[0].settings)
    except ValidationError:
        return ConsoleSettings()


def mentions(text: str, name: str) -> bool:
    """``text`` names ``name`` as a word (case-insensitively): ``hi eevee``, ``@eevee:``."""
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE) is not None


def session_user(name: str, pid: int | None = None, account: str | None = None) -> ChatUser:
    """The chat user of one session: id ``<name>-<pid>``, unique per session.

    ``account`` is the operating system's login name (whoever can run ``eevee chat`` holds the
    CLI's bus credentials, so it is as authenticated as the console gets).
    """
    return ChatUser(id=f"{name}-{os.getpid() if pid is None else pid}", name=name, account=account)


def _login_name() -> str | None:
    try:
        import getpass

        return getpass.getuser() or None
    except Exception:
        return None


# -- the session: bus side ---------------------------------------------------------------------


Show = Callable[[Envelope[Any]], None]


class ChatSession:
    """One console user on the bus: says lines, collects the replies.

    Replies are matched to a sent line by trace id (:meth:`say` then :meth:`wait_replies`);
    any other reply addressed to the session (its room, or privately its user) goes to
    ``show`` when set. With :meth:`start`'s ``watch_room``, the room's other lines and joins
    and parts go to ``show`` too.
    """

    def __init__(
        self,
        ipc: Ipc,
        *,
        user: ChatUser,
        network: str = DEFAULT_NETWORK,
        room: str = DEFAULT_ROOM,
        private: bool = False,
        bot_name: str = DEFAULT_BOT_NAME,
    ) -> None:
        self.ipc = ipc
        self.user = user
        self.network = network
        self.private = private
        self.room = user.id if private else room
        self.bot_name = bot_name
        self.show: Show | None = None
        self.joined = False
        self._ids = IdFactory()
        self._waiting: dict[str, asyncio.Queue[Envelope[OutgoingMessage]]] = {}
        self._subs: list[Subscription] = []

    @property
    def in_subject(self) -> str:
        """Where this session's lines go: ``{p}.chat.in.console.<network>.<room>``."""
        return self.ipc.subjects.chat_in(PLATFORM, self.network, self.room)

    @property
    def out_subject(self) -> str:
        """Where the bot's console messages come: ``{p}.chat.out.console.<network>``."""
        return self.ipc.subjects.chat_out(PLATFORM, self.network)

    def addressed(self, out: OutgoingMessage) -> bool:
        """``out`` is for this session: private to its user, or to its room (not private)."""
        if out.platform != PLATFORM or out.network != self.network:
            return False
        if out.private:
            return out.target == self.user.id
        return not self.private and out.target == self.room

    async def start(self, *, watch_room: bool = False) -> None:
        """Subscribe to the bot's replies (and, with ``watch_room``, to the room)."""
        self._subs.append(await self.ipc.subscribe(self.out_subject, self._on_out))
        if watch_room and not self.private:
            self._subs.append(await self.ipc.subscribe(self.in_subject, self._on_line))
            events = self.ipc.subjects.pattern(
                f"chat.event.{PLATFORM}.{encode_token(self.network)}.*"
            )
            self._subs.append(await self.ipc.subscribe(events, self._on_event))

    async def join(self) -> None:
        """Announce the user in the room (a ``join`` event), as a connector does."""
        if not self.private:
            await self._event(ChatEventType.JOIN)
            self.joined = True

    async def close(self) -> None:
        """Announce the part (if joined), unsubscribe, and flush what was published."""
        if self.joined:
            self.joined = False
            with contextlib.suppress(Exception):
                await self._event(ChatEventType.PART)
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()
        with contextlib.suppress(Exception):
            await self.ipc.nc.flush(timeout=2)

    def message(self, text: str) -> ChatMessage:
        """The chat message this session sends for ``text``."""
        return ChatMessage(
            platform=PLATFORM,
            network=self.network,
            room=self.room,
            user=self.user,
            text=text,
            private=self.private,
            mentioned=mentions(text, self.bot_name),
            message_id=self._ids(),
        )

    async def say(self, text: str) -> str:
        """Publish ``text`` as the user; returns the envelope id, the trace of its replies.

        Replies are collected from now on until :meth:`wait_replies` for that trace ends.
        """
        msg_id, payload = self.ipc.encode(self.message(text))
        self._waiting[msg_id] = asyncio.Queue()
        try:
            await self.ipc.store_raw(self.in_subject, payload, msg_id)
        except BaseException:
            self._waiting.pop(msg_id, None)
            raise
        return msg_id

    async def wait_replies(self, trace: str, *, timeout: float, quiet: float, emit: Show) -> int:
        """Pass the replies of ``trace`` to ``emit`` as they come; return how many came.

        Waits up to ``timeout`` for the first, then until ``quiet`` seconds pass without
        another. Replies of the trace that come later go to ``show`` if they are addressed to
        the session, else nowhere.
        """
        queue = self._waiting.setdefault(trace, asyncio.Queue())
        count = 0
        wait = timeout
        try:
            while True:
                try:
                    async with asyncio.timeout(wait):
                        env = await queue.get()
                except TimeoutError:
                    return count
                emit(env)
                count += 1
                wait = quiet
        finally:
            self._waiting.pop(trace, None)

    async def _on_out(self, env: Envelope[OutgoingMessage]) -> None:
        queue = self._waiting.get(env.trace)
        if queue is not None:
            queue.put_nowait(env)
        elif self.show is not None and self.addressed(env.body):
            self.show(env)

    async def _on_line(self, env: Envelope[ChatMessage]) -> None:
        msg = env.body
        if self.show is not None and msg.user.id != self.user.id and not msg.private:
            self.show(env)

    async def _on_event(self, env: Envelope[ChatEvent]) -> None:
        ev = env.body
        if (
            self.show is not None
            and ev.event in (ChatEventType.JOIN, ChatEventType.PART, ChatEventType.QUIT)
            and ev.room == self.room
            and ev.user is not None
            and ev.user.id != self.user.id
        ):
            self.show(env)

    async def _event(self, event: ChatEventType) -> None:
        subject = self.ipc.subjects.chat_event(PLATFORM, self.network, event.value)
        body = ChatEvent(
            platform=PLATFORM, network=self.network, event=event, room=self.room, user=self.user
        )
        await self.ipc.publish(subject, body)


# -- the terminal side ----------------------------------------------------------------------------

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


class _Terminal:
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


# -- running it ----------------------------------------------------------------------------------


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


def run_chat(args: argparse.Namespace, client: Connect, paths: Any) -> int:
    """``eevee chat``: returns the exit code. ``client`` connects to the running supervisor's
    bus (the CLI's ``_client``); ``paths`` are the installation's (history goes in its
    state dir)."""
    name = args.user if args.user is not None else os.environ.get("USER") or "you"
    if not name.strip():
        print("eevee: --user must not be empty", file=sys.stderr)
        return 2
    if not args.room:
        print("eevee: --room must not be empty", file=sys.stderr)
        return 2
    if not args.timeout > 0:
        print("eevee: --timeout must be positive", file=sys.stderr)
        return 2
    settings = _settings(args)
    interactive = sys.stdin.isatty()
    color = interactive and sys.stdout.isatty() and not args.json and not os.environ.get("NO_COLOR")
    bus = _BusThread()
    nc: Any = None
    session: ChatSession | None = None
    try:
        nc, cli_ipc, _ = bus.run(client(args), timeout=30)
        ipc = Ipc(cli_ipc.subjects, SOURCE, dlq=False)
        bus.run(ipc.attach(nc))
        session = ChatSession(
            ipc,
            user=session_user(name.strip(), account=_login_name()),
            network=settings.network,
            room=args.room,
            private=args.private,
            bot_name=settings.bot_name,
        )
        term = _Terminal(
            sys.stdout,
            bot=settings.bot_name,
            json_lines=args.json,
            color=color,
            interactive=interactive,
            mark_private=not args.private,
        )
        if interactive:
            return _repl(bus, session, term, paths.state_dir / HISTORY_FILE)
        bus.run(session.start())
        lines = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
        return _scripted(bus, session, term, lines, args.timeout)
    finally:
        if session is not None:
            with contextlib.suppress(Exception):
                bus.run(session.close(), timeout=3)
        if nc is not None:
            with contextlib.suppress(Exception):
                bus.run(nc.close(), timeout=3)
        bus.close()


def _settings(args: argparse.Namespace) -> ConsoleSettings:
    """The console settings of the configuration in use; defaults when there is none."""
    from eeveepy.config import find_config, load_config

    try:
        path = find_config(Path(args.config) if getattr(args, "config", None) else None)
        if path is None:
            return ConsoleSettings()
        return console_settings(load_config(path))
    except ConfigError:
        return ConsoleSettings()


def _scripted(
    bus: _BusThread, session: ChatSession, term: _Terminal, lines: Iterable[str], timeout: float
) -> int:
    """One message per line, each followed by its replies; 1 when a line got none."""
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
    return 1 if missed else 0


def _repl(bus: _BusThread, session: ChatSession, term: _Terminal, history: Path) -> int:
    """The interactive loop: prompt, say, show the replies; /quit or Ctrl-D to leave."""
    readline = _load_readline(history)
    loaded = readline.get_current_history_length() if readline is not None else 0
    term.readline = readline
    session.show = term.show
    bus.run(session.start(watch_room=True))
    bus.run(session.join())
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
            try:
                trace = bus.run(session.say(line))
                bus.run(
                    session.wait_replies(trace, timeout=REPL_WAIT, quiet=REPL_QUIET, emit=term.show)
                )
            except KeyboardInterrupt:
                term.write("")
            except EeveeError as exc:
                term.write(f"eevee: {exc}", sys.stderr)
            except Exception:
                if not session.ipc.nc.is_closed:
                    raise
                # The connection is gone (no reconnecting: the bus may be another one now).
                term.write("eevee: the bus connection is closed; did `eevee up` stop?", sys.stderr)
                return 1
    finally:
        if readline is not None:
            _save_history(readline, history, loaded)


def _load_readline(history: Path) -> ModuleType | None:
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


def _save_history(readline: ModuleType, history: Path, loaded: int) -> None:
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
