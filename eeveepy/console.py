"""The console platform on the bus: its settings, and a session (one console user).

The console is the chat platform of ``eevee chat``. Each ``eevee chat`` process is one
**console session**, the front end of the console connector, and speaks the connectors'
envelopes directly on the bus (see "Console connector" in docs/protocol.md):

- every line typed is a :class:`~eeveepy.protocol.models.ChatMessage` (platform ``console``,
  network ``local``, room ``#console`` or, privately, the user's own id) stored on
  ``{p}.chat.in.console.<network>.<room>`` with ``source`` ``console``;
- the bot's answers are the :class:`~eeveepy.protocol.models.OutgoingMessage` envelopes on
  ``{p}.chat.out.console.<network>``. A session shows those addressed to its room and those
  sent privately to its user id, which is unique per session (``<name>-<pid>``), so two
  sessions never see each other's private replies.

The ``operators.console`` operator is the connector's resident half (it announces the
``connected`` event and has a place in ``eevee ps``); sessions do not depend on it.
:class:`ConsoleSettings` are its settings, which ``eevee chat`` reads from the configuration
for the network and the bot's name. Nothing here prints: the terminal is
:mod:`eeveepy.cli.chat`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from eeveepy.bus.ipc import Ipc, Subscription
from eeveepy.config import Config
from eeveepy.protocol.codec import IdFactory
from eeveepy.protocol.models import (
    ChatEvent,
    ChatEventType,
    ChatMessage,
    ChatUser,
    Envelope,
    OutgoingMessage,
)
from eeveepy.protocol.subjects import encode_token

__all__ = [
    "CONSOLE_MODULE",
    "DEFAULT_BOT_NAME",
    "DEFAULT_NETWORK",
    "DEFAULT_ROOM",
    "PLATFORM",
    "SOURCE",
    "ChatSession",
    "ConsoleSettings",
    "Show",
    "console_settings",
    "mentions",
    "session_user",
]

PLATFORM: Final = "console"
"""The platform name of console messages."""
SOURCE: Final = "console"
"""The ``source`` of what sessions publish: they are the console connector's front end."""
DEFAULT_NETWORK: Final = "local"
DEFAULT_ROOM: Final = "#console"
DEFAULT_BOT_NAME: Final = "eevee"
CONSOLE_MODULE: Final = "operators.console"
"""The module of the console operator, whose settings ``eevee chat`` reads."""


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


def console_settings(config: Config) -> ConsoleSettings:
    """The console operator's settings in ``config``.

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


Show = Callable[[Envelope[Any]], None]
"""Where a session hands what it receives for its user (the terminal shows it)."""


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
