"""The router's service: chat lines in, command requests out.

Every chat line arrives twice (see "Delivery of chat input" in docs/protocol.md): at once on a
plain subscription (:meth:`Router.on_chat`) and from the stream that keeps it until it has been
answered (the backstop, :mod:`eeveepy.bus.backstop`): the stream's copies are acknowledged in
batches once their lines were answered, and :meth:`Router.on_stored` gets only a line the fast
path never saw (published while the router was down, or lost on the way). Handling a line:
drop what is not for the router (notices, ignored users, lines that are not commands, lines
too old), check scope, permissions and rate limits, parse the arguments, then request
``{p}.command.run.<name>`` (asking again while the command's operator restarts) and reply with
what went wrong, if anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from functools import partial
from typing import Any

from eeveepy import Operator
from eeveepy.aio import running_loop
from eeveepy.bus.delivery import Handling, Once
from eeveepy.bus.request import Asked
from eeveepy.errors import EeveeError, NoRespondersError, RemoteError, RequestTimeoutError
from eeveepy.protocol.commands import HELP
from eeveepy.protocol.models import (
    ChatMessage,
    CommandInvocation,
    CommandRegistration,
    CommandResult,
    Envelope,
    MessageStyle,
)

from .help import help_text, lead
from .parse import CommandLine, parse_arguments, prefixes_for, split_command
from .permissions import Permissions, Rule, identities, in_scope
from .ratelimit import RateLimiter, book
from .registrations import Registrar
from .registry import Registry
from .settings import RouterSettings

__all__ = ["Router", "create", "main"]

Sent = tuple[CommandInvocation, Asked[CommandResult] | None]
"""A command's invocation and its request, sent as the line was handled (None: it could not
be, and is asked again)."""


class Router:
    """The router's state and handlers, bound to its :class:`Operator`."""

    def __init__(self, op: Operator[RouterSettings]) -> None:
        self.op = op
        self.registry = Registry()
        self.registrar = Registrar(op, self.registry)
        self.limiter = RateLimiter()
        self.permissions = Permissions()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None
        self.once = Once()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._asked: set[Asked[CommandResult]] = set()
        """Commands whose result is awaited without a task (see :meth:`_answered`)."""
        """The lines taken, by envelope id (shared with the backstop)."""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Apply the settings and load the registrations (see :meth:`Registrar.start`)."""
        self.apply_settings()
        await self.registrar.start()

    def apply_settings(self) -> None:
        """Take the (new) settings: permissions and how many commands run at once."""
        s = self.op.settings
        rules = {k: Rule(tuple(r.allow), tuple(r.deny)) for k, r in s.rules.items()}
        self.permissions = Permissions(s.admins, s.groups, rules, s.ignore)
        self._slots = asyncio.Semaphore(s.max_in_flight)

    async def stop(self) -> None:
        """Cancel the commands still running (bounded)."""
        for asked in list(self._asked):
            asked.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=0.5)

    # -- chat ------------------------------------------------------------------------------

    async def on_chat(self, env: Envelope[ChatMessage]) -> None:
        """A chat line on the fast path (plain subscription): handled at once."""
        await self._take(env)

    async def on_stored(self, env: Envelope[ChatMessage]) -> None:
        """A line from the stream that the fast path never saw (the router was down, the bus
        away): handled now; the backstop acknowledges it once answered."""
        await self._take(env)

    async def _take(self, env: Envelope[ChatMessage]) -> Handling:
        handling, first = self.once.take(env.id)
        if first:
            await self._dispatch(env, handling)
        return handling

    async def _dispatch(self, env: Envelope[ChatMessage], track: Handling) -> None:
        msg = env.body
        if msg.style is not MessageStyle.MESSAGE:  # never answer notices (nor actions)
            return
        s = self.op.settings
        ids = identities(msg.platform, msg.network, msg.user)
        perms = self.permissions
        if perms.ignored(msg, ids):
            return
        prefixes = prefixes_for(s.prefixes, s.prefix_overrides, msg.platform, msg.network, msg.room)
        line = split_command(msg.text, prefixes=prefixes, names=s.names, private=msg.private)
        if line is None:
            return
        age = (datetime.now(UTC) - env.timestamp).total_seconds()
        if s.max_age and age > s.max_age:
            self.op.log.warning("command too old to run", command=line.name, age_s=round(age))
            text = f"`{line.name}` was not run: it waited {age:.0f} s for the bot"
            self._spawn(self._notice(env, text, track.start(), style=MessageStyle.MESSAGE))
            return
        reg: CommandRegistration | None = None
        allowed = True
        if line.name == HELP:
            allowed = perms.allowed(HELP, None, msg, ids)
        else:
            reg = self.registry.lookup(line.name)
            if reg is not None and not in_scope(reg.scope, msg):
                reg = None
            if reg is None and not s.unknown_reply:
                return
            if reg is not None:
                allowed = perms.allowed(reg.name, reg.permission, msg, ids)
        booking = book(self.limiter, s, msg, ids[0], reg if allowed else None)
        if not booking.ok:
            if booking.notice:
                self._spawn(self._notice(env, booking.notice, track.start()))
            return
        slots = self._slots
        if booking.delay > 0 or reg is None or not allowed or slots is None or slots.locked():
            track.start()
            self._spawn(self._answer(env, line, prefixes, reg, allowed, booking.delay, track))
            return
        # The common case: the command's request leaves in this turn of the event loop, and
        # its result is looked at when it comes, without a task (see _answered).
        await slots.acquire()  # (free: no wait)
        sent: Sent | None = None
        try:
            what = self._invocation(env, line, prefixes, reg)
            if isinstance(what, CommandInvocation):
                sent = (what, await self._ask(what, env.trace))
        except Exception:
            sent = None  # the task does it again, and says what went wrong
        track.start()
        if sent is None or sent[1] is None:
            self._spawn(self._answer(env, line, prefixes, reg, True, 0.0, track, sent, slots))
            return
        asked = sent[1]
        self._asked.add(asked)
        asked.when_done(partial(self._answered, env, line, prefixes, reg, sent, slots, track))

    def _answered(
        self,
        env: Envelope[ChatMessage],
        line: CommandLine,
        prefixes: list[str],
        reg: CommandRegistration,
        sent: Sent,
        slots: asyncio.Semaphore,
        track: Handling,
        asked: Asked[CommandResult],
    ) -> None:
        """The result of a command sent by :meth:`_dispatch` came, or its request failed:
        ``ok`` ends the line here (the command operator replied itself); anything else
        (a failure to tell, no responders, a timeout: asking again) is :meth:`_answer`'s."""
        self._asked.discard(asked)
        try:
            ok = asked.result().body.ok
        except asyncio.CancelledError:  # the router stopping
            slots.release()
            return
        except Exception:
            ok = False
        if not ok:
            self._spawn(self._answer(env, line, prefixes, reg, True, 0.0, track, sent, slots))
            return
        slots.release()
        self.op.log.debug("command ran", command=reg.name, ok=True)
        track.done = True  # (what ``await track.finish()`` does, from a callback)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._loop = loop = running_loop(self._loop)
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notice(
        self,
        env: Envelope[ChatMessage],
        text: str,
        track: Handling,
        style: MessageStyle = MessageStyle.NOTICE,
    ) -> None:
        try:
            await self.op.reply(env, text, private=style is MessageStyle.NOTICE, style=style)
        except Exception as exc:
            self.op.log.error("could not send a notice", error=repr(exc))
        await track.finish()

    async def _answer(
        self,
        env: Envelope[ChatMessage],
        line: CommandLine,
        prefixes: list[str],
        reg: CommandRegistration | None,
        allowed: bool,
        delay: float,
        track: Handling,
        sent: Sent | None = None,
        held: asyncio.Semaphore | None = None,
    ) -> None:
        """Run the command (or say why not) and reply what went wrong, if anything; ``sent``
        is its invocation and request when already sent, ``held`` the slot it holds."""
        if delay > 0:
            await asyncio.sleep(delay)
        slots = held or self._slots or asyncio.Semaphore(1)
        if held is None:
            await slots.acquire()
        try:
            try:
                text = await self._run(env, line, prefixes, reg, allowed, sent)
                # Stored before the line is acknowledged; a router killed in between handles
                # the line again and replies under the same id, which is kept once.
                if text:
                    await self.op.reply(env, text)
            except Exception as exc:
                self.op.log.exception("command dispatch failed", command=line.name, error=repr(exc))
                with contextlib.suppress(Exception):
                    await self.op.reply(env, f"`{line.name}` failed: internal error in the router")
            await track.finish()
        finally:
            slots.release()
            if sent is not None and sent[1] is not None:
                sent[1].cancel()

    async def _run(
        self,
        env: Envelope[ChatMessage],
        line: CommandLine,
        prefixes: list[str],
        reg: CommandRegistration | None,
        allowed: bool,
        sent: Sent | None = None,
    ) -> str:
        msg = env.body
        how = lead(msg, prefixes, self.op.settings.names)
        if line.name == HELP:
            if not allowed:
                return f"you are not allowed to run `{HELP}`"
            return help_text(self.registry, self.permissions, msg, line.text, prefixes, how)
        if reg is None:
            return f"unknown command `{line.name}`; try `{how}{HELP}`"
        if not allowed:
            return f"you are not allowed to run `{reg.name}`"
        inv, asked = sent or (self._invocation(env, line, prefixes, reg), None)
        if not isinstance(inv, CommandInvocation):
            return inv
        started = time.monotonic()
        try:
            result = await self._request(inv, env.trace, asked)
        except NoRespondersError:
            return f"`{reg.name}` is unavailable right now (its operator is not running)"
        except RequestTimeoutError:
            return f"`{reg.name}` timed out"
        except RemoteError as exc:
            _, _, why = str(exc).partition(": ")
            return f"`{reg.name}` failed: {why or exc}"
        except EeveeError as exc:
            return f"`{reg.name}` failed: {exc}"
        self.op.log.debug(
            "command ran",
            command=reg.name,
            ok=result.body.ok,
            ms=(time.monotonic() - started) * 1e3,
        )
        if not result.body.ok:
            return f"`{reg.name}` failed: {result.body.message or 'no reason given'}"
        return ""

    def _invocation(
        self,
        env: Envelope[ChatMessage],
        line: CommandLine,
        prefixes: list[str],
        reg: CommandRegistration,
    ) -> CommandInvocation | str:
        """The request of a command line, or the usage to answer when its arguments do not
        parse."""
        parsed = parse_arguments(self.registry.pattern(reg.name), line.text)
        if parsed is None:
            how = lead(env.body, prefixes, self.op.settings.names)
            return f"usage: {reg.usage or how + reg.name}"
        args, text = parsed
        return CommandInvocation(command=reg.name, args=args, text=text, message=env.body)

    async def _ask(self, inv: CommandInvocation, trace: str) -> Asked[CommandResult] | None:
        """Send the request of ``inv`` now; None when it could not be (:meth:`_request`
        then tries again and says why)."""
        s = self.op.settings
        subject = self.op.subjects.command_run(inv.command)
        try:
            return await self.op.ipc.ask(
                subject, inv, CommandResult, timeout=s.timeout, headers={"trace": trace}
            )
        except EeveeError:
            return None

    async def _request(
        self, inv: CommandInvocation, trace: str, asked: Asked[CommandResult] | None = None
    ) -> Envelope[CommandResult]:
        """Ask the command's operators (``asked``: the request already sent), again while
        nobody answers for ``retry_for`` seconds (an operator being restarted) and once more
        after a timeout (its operator may have died while running it). Asking again is safe:
        a command runs once per chat line in an operator, and its replies, run again
        elsewhere, carry the same ids."""
        s = self.op.settings
        subject = self.op.subjects.command_run(inv.command)
        loop = running_loop(self._loop)
        give_up = loop.time() + s.retry_for
        delay, timed_out = 0.1, False
        while True:
            try:
                if asked is not None:
                    first, asked = asked, None
                    return await first.reply()
                return await self.op.ipc.request(
                    subject, inv, CommandResult, timeout=s.timeout, headers={"trace": trace}
                )
            except NoRespondersError:
                if loop.time() + delay > give_up:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except RequestTimeoutError:
                if timed_out:
                    raise
                timed_out = True
                give_up = loop.time() + s.retry_for


def create() -> Operator[RouterSettings]:
    """Build the router operator (nothing runs until ``run()`` or ``serve()``)."""
    op = Operator(RouterSettings, name="router")
    router = Router(op)
    op.ipc.subscribe(op.subjects.command_register(), router.registrar.on_register)
    op.ipc.subscribe(op.subjects.pattern("command.register.>"), router.registrar.on_own_register)
    # Every chat line comes twice: at once on the fast path, and from the stream that keeps it
    # until it is answered (see "Delivery of chat input" in docs/protocol.md).
    op.ipc.subscribe("chat.in.>", router.on_chat, queue="router")
    op.ipc.subscribe("chat.in.>", router.on_stored, durable="router", backstop=router.once)
    op.on_start(router.start)
    op.on_reload(router.apply_settings)
    op.on_stop(router.stop)
    return op


def main() -> None:
    """Run the router operator as a process."""
    create().run()
