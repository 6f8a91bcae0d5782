"""Chat commands, the author's side: ``op.command`` and what it does on the bus.

An operator serves a command with a decorator::

    op = Operator(name="echo")

    @op.command("echo", usage="!echo TEXT", help="Repeat TEXT.", pattern=r"(?P<text>.+)")
    async def echo(inv: CommandInvocation) -> str | None:
        return inv.args["text"]  # a returned string is the reply to the invoking message

The operator then publishes a :class:`~eeveepy.protocol.models.CommandRegistration` on
``{p}.command.register.<id>`` when it starts and whenever the router asks (a
:class:`~eeveepy.protocol.models.CommandSync` on ``{p}.command.sync``), and answers requests on
``{p}.command.run.<name>`` in the queue group ``cmd.<name>``: replicas share the load and each
invocation runs once. The answer is a :class:`~eeveepy.protocol.models.CommandResult`: ``ok``
once the handler returned (and its reply was sent), ``ok=False`` with the exception's text if
it raised.

Commands that come and go while the operator runs (a bridge whose commands follow a remote
listing) use :meth:`Commands.add_live` and :meth:`Commands.remove`: the latter publishes a
:class:`~eeveepy.protocol.models.CommandUnregistration` so the router forgets the command.

This module needs only a little of the operator (:class:`CommandHost`), so the runtime can
offer ``op.command`` without the two depending on each other. The router's side of commands
(splitting chat lines, permissions, rate limits) lives in ``operators/router/``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypedDict, TypeVar, Unpack

from pydantic import ValidationError
from structlog.typing import FilteringBoundLogger

from eeveepy.aio import running_loop
from eeveepy.bus.ipc import Ipc
from eeveepy.bus.subscription import Subscription
from eeveepy.errors import OperatorError
from eeveepy.protocol.codec import describe_validation_error
from eeveepy.protocol.commands import check_registration, run_queue
from eeveepy.protocol.models import (
    ChatMessage,
    CommandInvocation,
    CommandRegistration,
    CommandResult,
    CommandScope,
    CommandSync,
    CommandUnregistration,
    Envelope,
    RateLimit,
)
from eeveepy.protocol.subjects import Subjects

__all__ = [
    "CONCURRENCY",
    "RECENT_RUNS",
    "CommandHandler",
    "CommandHost",
    "CommandOptions",
    "Commands",
    "command",
    "commands_of",
]

CONCURRENCY: Final = 32
"""Invocations of one command an operator runs at once by default (started in the order they
came, so replies that need no waiting go out in that order)."""
RECENT_RUNS: Final = 4096
"""Invocations remembered per operator, so one delivered again is answered, not run again."""

T = TypeVar("T")
CommandHandler = Callable[[CommandInvocation], Awaitable[str | None] | str | None]
"""A command's code: gets the invocation, returns the reply text (or None for no reply)."""

StartHook = Callable[[], Awaitable[None]]


class CommandOptions(TypedDict, total=False):
    """The options of a command besides its name and handler (see :func:`command`)."""

    usage: str
    help: str
    pattern: str | None
    aliases: Sequence[str]
    permission: str | None
    rate_limit: RateLimit | None
    scope: CommandScope | None


class CommandHost(Protocol):
    """What serving commands needs of an operator (:class:`~eeveepy.runtime.operator.Operator`
    is one)."""

    @property
    def id(self) -> str:
        """The operator id, named in the registrations."""
        ...

    @property
    def subjects(self) -> Subjects:
        """The subjects of the bus prefix in use."""
        ...

    @property
    def ipc(self) -> Ipc:
        """The bus (read each time: the operator may replace it before it connects)."""
        ...

    @property
    def log(self) -> FilteringBoundLogger:
        """The operator's logger."""
        ...

    @property
    def extensions(self) -> dict[type, object]:
        """Per-operator state of add-ons, keyed by their class."""
        ...

    def on_start(self, fn: StartHook) -> StartHook:
        """Run ``fn`` once connected, before the operator says it is ready."""
        ...

    async def reply(self, msg: ChatMessage, text: str) -> str:
        """Answer ``msg`` where it came from."""
        ...


@dataclass
class _Served:
    registration: CommandRegistration  # ``operator`` is filled in when published
    handler: CommandHandler
    subscription: Subscription


class Commands:
    """The commands one operator serves; get it with :func:`commands_of`."""

    def __init__(self, op: CommandHost) -> None:
        self._op = op
        self._served: dict[str, _Served] = {}
        self._sync: Subscription | None = None
        self._runs: OrderedDict[tuple[str, str], asyncio.Future[CommandResult]] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(
        self,
        name: str,
        handler: CommandHandler,
        *,
        usage: str = "",
        help: str = "",
        pattern: str | None = None,
        aliases: Sequence[str] = (),
        permission: str | None = None,
        rate_limit: RateLimit | None = None,
        scope: CommandScope | None = None,
        concurrency: int = CONCURRENCY,
    ) -> None:
        """Serve ``name`` with ``handler``; declare it before the operator runs (at run time,
        use :meth:`add_live`)."""
        if name in self._served:
            raise OperatorError(f"command {name!r} is declared twice")
        if self._op.ipc.connected:
            raise OperatorError(f"declare command {name!r} before the operator runs")
        reg = _registration(
            name,
            handler,
            usage=usage,
            help=help,
            pattern=pattern,
            aliases=aliases,
            permission=permission,
            rate_limit=rate_limit,
            scope=scope,
        )
        if not self._served and not self._sync:  # the first command: hook into the operator's life
            self._op.on_start(self.register)
            self._sync = self._op.ipc.subscribe(self._op.subjects.command_sync(), self._on_sync)
        self._served[name] = _Served(reg, handler, self._subscribe(name, concurrency))

    async def add_live(
        self,
        name: str,
        handler: CommandHandler,
        concurrency: int = CONCURRENCY,
        **options: Unpack[CommandOptions],
    ) -> None:
        """Serve ``name`` from now on, while the operator runs (commands that come and go).

        The command is subscribed and its registration published at once. Adding a name
        already served replaces its handler and definition (the router takes the new
        definition: it is the same operator's). From an ``on_start`` hook on, e.g. for a
        command whose definition depends on the settings. ``concurrency`` as for
        :func:`command` (kept from the first ``add_live`` of the name).
        """
        if not self._op.ipc.connected:
            raise OperatorError(f"add_live({name!r}) needs a running operator; use add()")
        reg = _registration(name, handler, **options)
        if self._sync is None:  # answer the router's sync requests from now on
            self._sync = await self._op.ipc.subscribe(
                self._op.subjects.command_sync(), self._on_sync
            )
        served = self._served.get(name)
        if served is None:
            sub = self._subscribe(name, concurrency)
            await sub.start()
            served = self._served[name] = _Served(reg, handler, sub)
        else:
            served.registration, served.handler = reg, handler
        await self._op.ipc.publish(
            self._op.subjects.command_register(self._op.id),
            reg.model_copy(update={"operator": self._op.id}),
        )

    async def remove(self, name: str) -> bool:
        """Stop serving ``name`` (False when it was not served): unsubscribed, and the router
        told to forget it (a :class:`~eeveepy.protocol.models.CommandUnregistration`)."""
        served = self._served.pop(name, None)
        if served is None:
            return False
        await served.subscription.unsubscribe()
        if self._op.ipc.connected:
            await self._op.ipc.publish(
                self._op.subjects.command_register(self._op.id),
                CommandUnregistration(operator=self._op.id, name=name),
            )
        return True

    def served(self) -> list[str]:
        """The names of the commands served now."""
        return list(self._served)

    def _subscribe(self, name: str, concurrency: int) -> Subscription:
        async def run(env: Envelope[CommandInvocation]) -> CommandResult:
            return await self._run(name, env)

        run.__qualname__ = f"command:{name}"
        return self._op.ipc.subscribe(
            self._op.subjects.command_run(name), run, queue=run_queue(name), concurrency=concurrency
        )

    def registrations(self) -> list[CommandRegistration]:
        """What this operator publishes on ``command.register`` (needs the operator id)."""
        op_id = self._op.id
        return [
            s.registration.model_copy(update={"operator": op_id}) for s in self._served.values()
        ]

    async def register(self) -> None:
        """Publish every registration (on start, and for each :class:`CommandSync`)."""
        subject = self._op.subjects.command_register(self._op.id)
        for reg in self.registrations():
            await self._op.ipc.publish(subject, reg)

    async def _on_sync(self, msg: CommandSync) -> None:
        self._op.log.info("command sync requested", router=msg.router, commands=len(self._served))
        await self.register()

    async def _run(self, name: str, env: Envelope[CommandInvocation]) -> CommandResult:
        """Run an invocation once: the same chat line asked again (a router that died before
        it saw the answer asks again) gets the first run's result, and no second reply."""
        key = (name, env.trace)
        earlier = self._runs.get(key)
        if earlier is not None:
            self._op.log.info("invocation answered again, not run", command=name, trace=env.trace)
            return await asyncio.shield(earlier)
        self._loop = loop = running_loop(self._loop)
        future: asyncio.Future[CommandResult] = loop.create_future()
        self._runs[key] = future
        if len(self._runs) > RECENT_RUNS:
            self._runs.popitem(last=False)
        # Replies are numbered per command (its queue group), not per replica: run again
        # elsewhere after this process died, the command's replies get the same ids and are
        # kept once.
        scope = self._op.ipc.reply_scope.set(run_queue(name))
        try:
            result = await self._run_once(name, env)
        except BaseException:
            self._runs.pop(key, None)
            future.cancel()
            raise
        finally:
            self._op.ipc.reply_scope.reset(scope)
        future.set_result(result)
        return result

    async def _run_once(self, name: str, env: Envelope[CommandInvocation]) -> CommandResult:
        served = self._served.get(name)
        if served is None:  # removed while the request was on its way
            return CommandResult(ok=False, message=f"`{name}` is not offered any more")
        inv = env.body
        try:
            result = served.handler(inv)
            if inspect.isawaitable(result):
                result = await result
            if result is not None and not isinstance(result, str):
                raise TypeError(
                    f"command handler returned {type(result).__name__}; return a str or None"
                )
            if result:
                await self._op.reply(inv.message, result)
        except Exception as exc:
            self._op.log.exception("command failed", command=name, envelope_id=env.id)
            return CommandResult(ok=False, message=str(exc) or type(exc).__name__)
        return CommandResult(ok=True)


def _registration(
    name: str,
    handler: CommandHandler,
    *,
    usage: str = "",
    help: str = "",
    pattern: str | None = None,
    aliases: Sequence[str] = (),
    permission: str | None = None,
    rate_limit: RateLimit | None = None,
    scope: CommandScope | None = None,
) -> CommandRegistration:
    """The registration of a command (``operator`` filled in when published), checked as the
    router checks it; :class:`OperatorError` says what is wrong."""
    if not callable(handler):
        raise OperatorError(f"the handler of command {name!r} is not callable")
    try:
        reg = CommandRegistration(
            operator="-",
            name=name,
            aliases=list(aliases),
            pattern=pattern,
            usage=usage,
            help=help,
            permission=permission,
            rate_limit=rate_limit,
            scope=scope or CommandScope(),
        )
    except ValidationError as exc:
        reason = describe_validation_error(exc, limit=exc.error_count())
        raise OperatorError(f"command {name!r}: {reason}") from None
    problem = check_registration(reg)
    if problem:
        raise OperatorError(f"command {name!r}: {problem}")
    return reg


def commands_of(op: CommandHost) -> Commands:
    """The :class:`Commands` of ``op`` (created on first use, kept on the operator itself)."""
    commands = op.extensions.get(Commands)
    if not isinstance(commands, Commands):
        commands = op.extensions[Commands] = Commands(op)
    return commands


def command(
    op: CommandHost,
    name: str,
    *,
    usage: str = "",
    help: str = "",
    pattern: str | None = None,
    aliases: Sequence[str] = (),
    permission: str | None = None,
    rate_limit: RateLimit | None = None,
    scope: CommandScope | None = None,
    concurrency: int = CONCURRENCY,
) -> Callable[[T], T]:
    """Decorator: ``op`` serves the chat command ``name`` with the decorated function.

    The function takes a :class:`~eeveepy.protocol.models.CommandInvocation` (``inv.args``
    holds the named groups of ``pattern`` and the ``--long-args``, ``inv.text`` the rest of the
    line, ``inv.message`` the chat message) and returns the reply text, or None to say nothing
    (it may reply itself with ``op.reply(inv.message, ...)``). ``usage`` and ``help`` are shown
    by ``!help``; ``permission`` names the group of users allowed to run it; ``rate_limit``
    limits each user; ``scope`` restricts where it is offered; ``concurrency`` is how many
    invocations run at once (started in the order they came; 1 runs them one after the
    other). ``op.command(...)`` is the same with the operator bound.
    """

    def decorator(fn: T) -> T:
        commands_of(op).add(
            name,
            fn,  # type: ignore[arg-type]  # checked: callable; the signature is the author's
            usage=usage,
            help=help,
            pattern=pattern,
            aliases=aliases,
            permission=permission,
            rate_limit=rate_limit,
            scope=scope,
            concurrency=concurrency,
        )
        return fn

    return decorator
