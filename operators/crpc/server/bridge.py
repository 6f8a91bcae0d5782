"""The bus side of the server: which commands exist, and saying one as a crpc user.

The commands are those the router accepted, as far as this operator has seen: it reads the
registrations and withdrawals (``command.register``, ``command.register.>``) and
rejections (``command.rejected.>``) and, at start, publishes ``command.sync`` so every command
operator registers again (harmless: the router keeps identical registrations once).

A call is said as a private ``chat.message`` of the platform ``crpc`` on
``{p}.chat.in.crpc.<network>.<room>``, with a message id of its own: the router applies its
permissions, scopes and rate limits to ``crpc:<network>:<user>`` as to any chat user, and
every reply (``chat.out`` on ``{p}.chat.out.crpc.<network>``) names that id in ``reply_to``.
The answer is what arrives until ``quiet`` seconds pass without more (at most ``timeout``
seconds after the first line), or nothing after ``timeout`` seconds (a command that answers
nothing).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from pydantic import ValidationError
from structlog.typing import FilteringBoundLogger

from eeveepy.bus.client import barrier
from eeveepy.bus.ipc import Ipc
from eeveepy.bus.natsadapter import bus_error
from eeveepy.bus.subscription import Subscription
from eeveepy.protocol.models import (
    ChatMessage,
    ChatUser,
    CommandRegistration,
    CommandRejected,
    CommandSync,
    Envelope,
    OutgoingMessage,
)
from operators.router.permissions import in_scope
from operators.router.registry import Registry

from .settings import ServerSettings
from .translate import Answer, Call

__all__ = ["PLATFORM", "Bridge"]

PLATFORM = "crpc"

UNREGISTER = "command.unregister"
"""The kind an operator withdraws one of its commands with, on its ``command.register.<id>``."""


@dataclass
class _Pending:
    """A call waiting for its replies."""

    operators: frozenset[str]
    texts: list[str] = field(default_factory=list)
    from_router: bool = False
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


class Bridge:
    """The commands seen on the bus, and calls of them as crpc users."""

    def __init__(self, ipc: Ipc, settings: ServerSettings, log: FilteringBoundLogger) -> None:
        self.ipc = ipc
        self.settings = settings
        self.log = log
        self.registry = Registry()
        self._pending: dict[str, _Pending] = {}
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        """Subscribe, then ask every command operator to register again."""
        s = self.ipc.subjects
        for pattern, handler in (
            (s.command_register(), self._on_register),
            (s.pattern("command.register.>"), self._on_own_register),
            (s.pattern("command.rejected.>"), self._on_rejected),
            (s.chat_out(PLATFORM, self.settings.network), self._on_out),
        ):
            self._subs.append(await self.ipc.subscribe(pattern, handler))
        await self.ipc.publish(s.command_sync(), CommandSync())
        try:  # the subscriptions are live once start_server returns
            await barrier(self.ipc.nc)
        except nats.errors.Error as exc:
            raise bus_error(exc, s.command_sync()) from None

    async def stop(self) -> None:
        """Unsubscribe (calls still waiting get no answer)."""
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.unsubscribe()

    def commands(self) -> list[CommandRegistration]:
        """One registration per command offered on the crpc platform, sorted by name."""
        return [reg for reg in self.registry.commands() if self._offered(reg)]

    def lookup(self, name: str) -> CommandRegistration | None:
        """The command named ``name`` (not an alias: the path is the name), if offered."""
        reg = self.registry.lookup(name)
        return reg if reg is not None and reg.name == name and self._offered(reg) else None

    def _offered(self, reg: CommandRegistration) -> bool:
        """Whether ``reg``'s scope takes the crpc platform and network (rooms are the
        router's to check: a room-scoped command works when called in its room), and it is
        not this operator's own: its ``rpc`` and the prefixes of the endpoints it calls are
        not served back (a client calling them would reach itself in a loop)."""
        if reg.operator == self.ipc.source:
            return False
        scope = reg.scope.model_copy(update={"rooms": []})
        probe = ChatMessage(
            platform=PLATFORM,
            network=self.settings.network,
            room="",
            user=ChatUser(id="", name=""),
            text="",
        )
        return in_scope(scope, probe)

    async def call(self, name: str, line: str, call: Call) -> Answer | None:
        """Say ``line`` (the command ``name`` and its arguments) as ``call``'s user in its
        room; the replies, or None when none came within ``timeout``."""
        s = self.settings
        message_id = f"crpc-{secrets.token_hex(12)}"
        pending = _Pending(frozenset(self.registry.operators(name)))
        self._pending[message_id] = pending
        room = call.room
        try:
            msg = ChatMessage(
                platform=PLATFORM,
                network=s.network,
                room=room,
                user=ChatUser(id=call.user, name=call.name),
                text=line,
                private=True,
                message_id=message_id,
            )
            await self.ipc.publish(self.ipc.subjects.chat_in(PLATFORM, s.network, room), msg)
            loop = asyncio.get_running_loop()
            wait, last = s.timeout, loop.time() + 2 * s.timeout
            while wait > 0:
                pending.arrived.clear()
                try:
                    async with asyncio.timeout(wait):
                        await pending.arrived.wait()
                except TimeoutError:
                    break
                if pending.from_router:
                    break  # the router says one thing, then nothing more
                # more lines may follow, but not forever: at most `timeout` after the first
                last = min(last, loop.time() + s.timeout)
                wait = min(s.quiet, last - loop.time())
        finally:
            del self._pending[message_id]
        if not pending.texts:
            return None
        return Answer(tuple(pending.texts), pending.from_router)

    # -- handlers ----------------------------------------------------------------------------

    async def _on_register(self, env: Envelope[dict[str, Any]]) -> None:
        self._take(env.kind, env.body)

    async def _on_own_register(self, env: Envelope[dict[str, Any]]) -> None:
        # On command.register.<id> the ipc layer has checked that <id> sent it; it may name
        # only itself (the router refuses the rest too).
        if env.body.get("operator") == env.source:
            self._take(env.kind, env.body)

    def _take(self, kind: str, body: dict[str, Any]) -> None:
        if kind == UNREGISTER:
            self.registry.remove(str(body.get("name", "")), str(body.get("operator", "")))
            return
        try:
            reg = CommandRegistration.model_validate(body)
        except ValidationError:
            return  # the router refuses it and says why
        if not self.registry.conflicts(reg):  # else the router refuses it too
            self.registry.add(reg)

    async def _on_rejected(self, env: Envelope[CommandRejected]) -> None:
        self.registry.remove(env.body.name, env.body.operator)

    async def _on_out(self, env: Envelope[OutgoingMessage]) -> None:
        out = env.body
        pending = self._pending.get(out.reply_to or "")
        if pending is None:
            return
        if not pending.texts and env.source not in pending.operators:
            pending.from_router = True
        pending.texts.append(out.text)
        pending.arrived.set()
