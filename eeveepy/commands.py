"""Chat commands: the API of command authors (``op.command``) and the router's helpers.

An operator serves a command with a decorator::

    op = Operator(name="echo")

    @op.command("echo", usage="!echo TEXT", help="Repeat TEXT.", pattern=r"(?P<text>.+)")
    async def echo(inv: CommandInvocation) -> str | None:
        return inv.args["text"]  # a returned string is the reply to the invoking message

The operator then publishes a :class:`~eeveepy.models.CommandRegistration` on
``{p}.command.register`` when it starts and whenever the router asks (a
:class:`~eeveepy.models.CommandSync` on ``{p}.command.sync``), and answers requests on
``{p}.command.run.<name>`` in the queue group ``cmd.<name>``: replicas share the load and each
invocation runs once. The answer is a :class:`~eeveepy.models.CommandResult`: ``ok`` once the
handler returned (and its reply was sent), ``ok=False`` with the exception's text if it raised.

The rest of this module is what a router needs, kept free of I/O so it can be tested alone:
splitting a chat line into command and arguments (:func:`split_command`), the arguments
(:func:`parse_long_args`, :func:`parse_arguments`), the identities of a user and the
permission rules (:func:`identities`, :class:`Permissions`), rate limits
(:class:`RateLimiter`) and the table of registrations (:class:`Registry`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pydantic import ValidationError

from eeveepy.errors import OperatorError
from eeveepy.protocol.models import (
    ChatMessage,
    ChatUser,
    CommandInvocation,
    CommandRegistration,
    CommandRejected,
    CommandResult,
    CommandScope,
    CommandSync,
    Envelope,
    RateLimit,
)
from eeveepy.protocol.subjects import Subjects

if TYPE_CHECKING:
    from eeveepy.runtime.operator import Operator

__all__ = [
    "GLOBAL_ID_PLATFORMS",
    "HELP",
    "CommandHandler",
    "CommandInvocation",
    "CommandLine",
    "CommandRejected",
    "CommandResult",
    "CommandSync",
    "Commands",
    "Permissions",
    "RateLimiter",
    "Registry",
    "Reservation",
    "Rule",
    "check_registration",
    "command",
    "commands_of",
    "glob_match",
    "identities",
    "in_scope",
    "parse_arguments",
    "parse_long_args",
    "prefixes_for",
    "rejected_subject",
    "run_queue",
    "split_command",
    "sync_subject",
    "validation_reason",
]

HELP: Final = "help"
"""The router's own command: reserved, no operator may register it."""

GLOBAL_ID_PLATFORMS: Final = frozenset({"xmpp", "matrix"})
"""Platforms whose user ids are unique across networks: they also get ``<platform>:<id>``."""

MAX_PATTERN_LENGTH: Final = 1000
"""Longest ``pattern`` a registration may carry."""

RECENT_RUNS: Final = 4096
"""Invocations remembered per operator, so one delivered again is answered, not run again."""

_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]*")
# A command word in chat: letters in any case (it is lowercased), then the name's characters.
_WORD_RE: Final = re.compile(r"([A-Za-z0-9][A-Za-z0-9_-]*)(?:\s+|$)")
_TOKEN_RE: Final = re.compile(r"\S+")
_FLAG_RE: Final = re.compile(r"(?:--|\u2014)([A-Za-z][A-Za-z0-9_-]*)(?:=(.*))?", re.DOTALL)

T = TypeVar("T")
CommandHandler = Callable[[CommandInvocation], Awaitable[str | None] | str | None]
"""A command's code: gets the invocation, returns the reply text (or None for no reply)."""


# -- subjects ---------------------------------------------------------------------------------


def sync_subject(subjects: Subjects) -> str:
    """``{p}.command.sync``: the router asks command operators to register again."""
    return subjects.command_sync()


def rejected_subject(subjects: Subjects, operator_id: str) -> str:
    """``{p}.command.rejected.<operator-id>``: a refused registration (operator id last)."""
    return subjects.command_rejected(operator_id)


def run_queue(name: str) -> str:
    """The queue group of ``command.run.<name>``: ``cmd.<name>``."""
    return f"cmd.{name}"


# -- the author's side ------------------------------------------------------------------------


@dataclass
class _Served:
    registration: CommandRegistration  # ``operator`` is filled in when published
    handler: CommandHandler


class Commands:
    """The commands one operator serves; get it with :func:`commands_of`."""

    def __init__(self, op: Operator[Any]) -> None:
        self._op = op
        self._served: dict[str, _Served] = {}
        self._runs: OrderedDict[tuple[str, str], asyncio.Future[CommandResult]] = OrderedDict()

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
    ) -> None:
        """Serve ``name`` with ``handler``; declare it before the operator runs."""
        if not callable(handler):
            raise OperatorError(f"the handler of command {name!r} is not callable")
        if name in self._served:
            raise OperatorError(f"command {name!r} is declared twice")
        if self._op.ipc.connected:
            raise OperatorError(f"declare command {name!r} before the operator runs")
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
            raise OperatorError(f"command {name!r}: {validation_reason(exc)}") from None
        problem = check_registration(reg)
        if problem:
            raise OperatorError(f"command {name!r}: {problem}")
        if not self._served:  # the first command: hook into the operator's life
            self._op.on_start(self.register)
            self._op.ipc.subscribe("command.sync", self._on_sync)
        self._served[name] = _Served(reg, handler)

        async def run(env: Envelope[CommandInvocation]) -> CommandResult:
            return await self._run(name, env)

        run.__qualname__ = f"command:{name}"
        self._op.ipc.subscribe(f"command.run.{name}", run, queue=run_queue(name))

    def registrations(self) -> list[CommandRegistration]:
        """What this operator publishes on ``command.register`` (needs the operator id)."""
        op_id = self._op.id
        return [
            s.registration.model_copy(update={"operator": op_id}) for s in self._served.values()
        ]

    async def register(self) -> None:
        """Publish every registration (on start, and for each :class:`CommandSync`)."""
        subject = self._op.subjects.command_register()
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
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._runs[key] = future
        if len(self._runs) > RECENT_RUNS:
            self._runs.popitem(last=False)
        # Replies are numbered per command, not per replica: run again elsewhere after this
        # process died, the command's replies get the same ids and are kept once.
        scope = self._op.ipc.reply_scope.set(f"cmd.{name}")
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
        served = self._served[name]
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


def commands_of(op: Operator[Any]) -> Commands:
    """The :class:`Commands` of ``op`` (created on first use, kept on the operator itself)."""
    commands = op.extensions.get(Commands)
    if not isinstance(commands, Commands):
        commands = op.extensions[Commands] = Commands(op)
    return commands


def command(
    op: Operator[Any],
    name: str,
    *,
    usage: str = "",
    help: str = "",
    pattern: str | None = None,
    aliases: Sequence[str] = (),
    permission: str | None = None,
    rate_limit: RateLimit | None = None,
    scope: CommandScope | None = None,
) -> Callable[[T], T]:
    """Decorator: ``op`` serves the chat command ``name`` with the decorated function.

    The function takes a :class:`~eeveepy.models.CommandInvocation` (``inv.args`` holds the
    named groups of ``pattern`` and the ``--long-args``, ``inv.text`` the rest of the line,
    ``inv.message`` the chat message) and returns the reply text, or None to say nothing (it
    may reply itself with ``op.reply(inv.message, ...)``). ``usage`` and ``help`` are shown
    by ``!help``; ``permission`` names the group of users allowed to run it; ``rate_limit``
    limits each user; ``scope`` restricts where it is offered. ``op.command(...)`` is the
    same with the operator bound.
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
        )
        return fn

    return decorator


# -- registrations ----------------------------------------------------------------------------


def validation_reason(exc: ValidationError) -> str:
    """A pydantic error as one short line: ``name: String should match pattern ...; ...``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(body)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def check_registration(reg: CommandRegistration) -> str:
    """What is wrong with a (schema-valid) registration beyond its schema; "" when nothing."""
    if reg.name == HELP:
        return f"`{HELP}` is the router's own command"
    for alias in reg.aliases:
        if not _NAME_RE.fullmatch(alias) or len(alias) > 64:
            return f"invalid alias {alias!r}: must match [a-z0-9][a-z0-9_-]*, 64 characters at most"
        if alias == HELP:
            return f"alias `{HELP}` is the router's own command"
    if reg.pattern is not None:
        if len(reg.pattern) > MAX_PATTERN_LENGTH:
            return f"pattern is longer than {MAX_PATTERN_LENGTH} characters"
        try:
            re.compile(reg.pattern)
        except re.error as exc:
            return f"invalid pattern {reg.pattern!r}: {exc}"
    if reg.permission is not None and not reg.permission:
        return "permission must name a group (or be null)"
    return ""


def _definition(reg: CommandRegistration) -> dict[str, Any]:
    return reg.model_dump(exclude={"operator"})


def _words(reg: CommandRegistration) -> set[str]:
    return {reg.name, *reg.aliases}


class Registry:
    """The router's table of accepted registrations, keyed by (name, operator).

    Several operators may register the same name with the same definition: they are replicas
    sharing the queue group. Any other overlap of names and aliases is a clash.
    """

    def __init__(self) -> None:
        self._regs: dict[tuple[str, str], CommandRegistration] = {}
        self._index: dict[str, str] = {}  # name or alias -> name
        self._patterns: dict[str, re.Pattern[str] | None] = {}

    def __len__(self) -> int:
        return len(self._regs)

    def get(self, name: str, operator: str) -> CommandRegistration | None:
        """The registration of ``name`` by ``operator``, if accepted."""
        return self._regs.get((name, operator))

    def conflicts(self, reg: CommandRegistration) -> list[CommandRegistration]:
        """Accepted registrations that ``reg`` would clash with (replicas do not clash)."""
        words = _words(reg)
        mine = _definition(reg)
        out = []
        for key, other in self._regs.items():
            if key == (reg.name, reg.operator) or not words & _words(other):
                continue
            if other.name == reg.name and _definition(other) == mine:
                continue  # a replica
            out.append(other)
        return out

    def add(self, reg: CommandRegistration) -> bool:
        """Accept ``reg`` (check :meth:`conflicts` first); False when it was already there."""
        key = (reg.name, reg.operator)
        if self._regs.get(key) == reg:
            return False
        self._regs[key] = reg
        self._reindex()
        return True

    def remove(self, name: str, operator: str) -> bool:
        """Forget the registration of ``name`` by ``operator``."""
        if self._regs.pop((name, operator), None) is None:
            return False
        self._reindex()
        return True

    def lookup(self, word: str) -> CommandRegistration | None:
        """The command ``word`` names (a name or an alias), one of its replicas."""
        name = self._index.get(word)
        if name is None:
            return None
        for (n, _), reg in self._regs.items():
            if n == name:
                return reg
        return None  # pragma: no cover - the index follows the table

    def commands(self) -> list[CommandRegistration]:
        """One registration per command name, sorted by name."""
        seen: dict[str, CommandRegistration] = {}
        for (name, _), reg in sorted(self._regs.items()):
            seen.setdefault(name, reg)
        return list(seen.values())

    def operators(self, name: str) -> list[str]:
        """The operators serving ``name``."""
        return sorted(op for (n, op) in self._regs if n == name)

    def pattern(self, name: str) -> re.Pattern[str] | None:
        """The compiled ``pattern`` of the command ``name``."""
        return self._patterns.get(name)

    def _reindex(self) -> None:
        self._index = {}
        self._patterns = {}
        for (name, _), reg in sorted(self._regs.items()):
            for word in _words(reg):
                self._index.setdefault(word, name)
            if name not in self._patterns:
                self._patterns[name] = re.compile(reg.pattern) if reg.pattern else None


# -- splitting a chat line --------------------------------------------------------------------


@dataclass(frozen=True)
class CommandLine:
    """A chat line that is a command: ``name`` (lowercased) and the argument ``text``."""

    name: str
    text: str
    via: str
    """How it was recognised: ``"prefix"``, ``"name"`` (addressed) or ``"private"``."""


def prefixes_for(
    prefixes: Sequence[str],
    overrides: Mapping[str, Sequence[str]],
    platform: str,
    network: str,
    room: str,
) -> list[str]:
    """The command prefixes of a room: the most specific override, else ``prefixes``.

    Override keys are ``"platform/network/room"``, ``"platform/network"`` or ``"platform"``.
    """
    for key in (f"{platform}/{network}/{room}", f"{platform}/{network}", platform):
        if key in overrides:
            return list(overrides[key])
    return list(prefixes)


def _strip_prefix(text: str, prefixes: Sequence[str]) -> str | None:
    for prefix in sorted(prefixes, key=len, reverse=True):
        if prefix and text[: len(prefix)].casefold() == prefix.casefold():
            return text[len(prefix) :]
    return None


@functools.lru_cache(maxsize=64)
def _address_re(names: tuple[str, ...]) -> re.Pattern[str] | None:
    if not names:
        return None
    alts = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    # "eevee: cmd", "eevee, cmd", "@eevee cmd", "@eevee: cmd"
    return re.compile(rf"(?:@(?:{alts})[:,]?|(?:{alts})[:,])\s+(.*)", re.IGNORECASE | re.DOTALL)


def split_command(
    text: str, *, prefixes: Sequence[str], names: Sequence[str], private: bool
) -> CommandLine | None:
    """The command in a chat line, or None when the line is not one.

    A line is a command when it starts with one of ``prefixes`` (``!echo hi``), when it
    addresses the bot by one of ``names`` (``eevee: echo hi``, ``eevee, echo hi``,
    ``@eevee echo hi``; a prefix may follow) or, for a private message, always (the prefix is
    optional). The command word is ``[A-Za-z0-9][A-Za-z0-9_-]*`` (lowercased); a line whose
    first word is anything else (``!!!``, ``! hi``) is not a command.
    """
    body = text.strip()
    rest = _strip_prefix(body, prefixes)
    via = "prefix"
    if rest is None:
        pattern = _address_re(tuple(names))
        match = pattern.fullmatch(body) if pattern else None
        if match is not None:
            via = "name"
            rest = match.group(1)
            rest = _strip_prefix(rest, prefixes) or rest
        elif private:
            via = "private"
            rest = body
        else:
            return None
    word = _WORD_RE.match(rest)
    if word is None:
        return None
    return CommandLine(word.group(1).lower(), rest[word.end() :].strip(), via)


# -- arguments --------------------------------------------------------------------------------


def parse_long_args(text: str) -> tuple[dict[str, str], str]:
    """ChatOps-RPC-style ``--long-args``: ``(args, the remaining text)``.

    ``--reason just because`` gives ``reason="just because"``: a flag takes the text up to the
    next flag. A bare ``--force`` gives ``"true"``; ``--env=prod`` works too; ``-`` in names
    becomes ``_`` and names are lowercased (``--Dry-Run`` -> ``dry_run``); an em dash
    (``—force``, what some chat clients make of ``--``) counts as ``--``. The text before the
    first flag is the remaining text, and so is everything after a lone ``--``. Spacing inside
    values and the remaining text is kept; both are stripped at the ends.
    """
    args: dict[str, str] = {}
    key: str | None = None
    start = 0  # where the current flag's value starts
    positional: list[str] = []
    first = len(text)  # where the first flag (or "--") starts
    for word in _TOKEN_RE.finditer(text):
        token = word.group()
        if token == "--":
            first = min(first, word.start())
            if key is not None:
                args[key] = text[start : word.start()].strip() or "true"
                key = None
            positional.append(text[word.end() :].strip())
            break
        flag = _FLAG_RE.fullmatch(token)
        if flag is None:
            continue
        first = min(first, word.start())
        if key is not None:
            args[key] = text[start : word.start()].strip() or "true"
        key = flag.group(1).replace("-", "_").lower()
        start = word.end()
        if flag.group(2):
            start = word.start() + token.index("=") + 1
    else:
        if key is not None:
            args[key] = text[start:].strip() or "true"
    rest = " ".join(p for p in (text[:first].strip(), *positional) if p)
    return args, rest


def parse_arguments(
    pattern: re.Pattern[str] | None, text: str
) -> tuple[dict[str, str], str] | None:
    """Arguments of an invocation: ``(args, text)``, or None when ``pattern`` does not match.

    The ``--long-args`` are taken out first (:func:`parse_long_args`); ``pattern`` must then
    match the remaining text entirely. Its named groups that matched become arguments too and
    win over a flag of the same name; a group that did not take part may be given as a flag.
    """
    args, rest = parse_long_args(text)
    if pattern is not None:
        match = pattern.fullmatch(rest)
        if match is None:
            return None
        for key, value in match.groupdict().items():
            if value is not None:
                args[key] = value
    return args, rest


# -- identities and permissions ---------------------------------------------------------------


def identities(platform: str, network: str, user: ChatUser) -> list[str]:
    """The identity strings of a chat user, matched by permission patterns.

    - ``<platform>:<network>:<user.id>`` always (``irc:libera:alice``,
      ``matrix:main:@alice:example.org``);
    - ``<platform>:<network>:<user.id>!<user.host>`` when the connector knows the host (IRC
      masks: ``irc:libera:alice!~alice@staff/alice``);
    - ``<platform>:<network>:account:<user.account>`` when the user is authenticated (IRC
      services account, ...);
    - ``<platform>:<user.id>`` for platforms whose ids are unique across networks
      (:data:`GLOBAL_ID_PLATFORMS`: ``xmpp:alice@example.org``, ``matrix:@alice:example.org``).
    """
    base = f"{platform}:{network}:{user.id}"
    out = [base]
    if user.host:
        out.append(f"{base}!{user.host}")
    if user.account:
        out.append(f"{platform}:{network}:account:{user.account}")
    if platform in GLOBAL_ID_PLATFORMS:
        out.append(f"{platform}:{user.id}")
    return out


@functools.lru_cache(maxsize=4096)
def _glob_re(pattern: str) -> re.Pattern[str]:
    parts = []
    for ch in pattern:
        parts.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def glob_match(pattern: str, value: str) -> bool:
    """Shell-style match, case-insensitive: ``*`` is any run, ``?`` one character.

    Unlike :mod:`fnmatch`, ``[`` is an ordinary character (IRC nicks use it).
    """
    return _glob_re(pattern).fullmatch(value) is not None


@dataclass(frozen=True)
class Rule:
    """Who may run a command: every ``deny`` entry refuses, a non-empty ``allow`` must match."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


def in_scope(scope: CommandScope, msg: ChatMessage) -> bool:
    """Whether a command of ``scope`` is offered where ``msg`` was said.

    Each non-empty list must have a matching entry (globs): ``platforms`` the platform,
    ``networks`` the network or ``platform/network``, ``rooms`` the room or
    ``platform/network/room``.
    """
    net = f"{msg.platform}/{msg.network}"
    checks = (
        (scope.platforms, (msg.platform,)),
        (scope.networks, (msg.network, net)),
        (scope.rooms, (msg.room, f"{net}/{msg.room}")),
    )
    for entries, values in checks:
        if entries and not any(glob_match(e, v) for e in entries for v in values):
            return False
    return True


@dataclass
class Permissions:
    """The router's permission settings, applied to chat users.

    Entries of ``admins``, ``ignore``, ``groups`` and rules are identity patterns (globs on
    :func:`identities`), or ``group:<name>``, ``room:<platform>/<network>/<room>`` (globs),
    ``network:<platform>/<network>`` (globs). Admins pass every check.
    """

    admins: Sequence[str] = ()
    groups: Mapping[str, Sequence[str]] = field(default_factory=dict)
    rules: Mapping[str, Rule] = field(default_factory=dict)
    ignore: Sequence[str] = ()

    def ignored(self, msg: ChatMessage, ids: Sequence[str] | None = None) -> bool:
        """Messages of this user are dropped silently."""
        return self._any(self.ignore, msg, ids or identities(msg.platform, msg.network, msg.user))

    def is_admin(self, msg: ChatMessage, ids: Sequence[str] | None = None) -> bool:
        """The user is an admin."""
        return self._any(self.admins, msg, ids or identities(msg.platform, msg.network, msg.user))

    def in_group(self, group: str, msg: ChatMessage, ids: Sequence[str] | None = None) -> bool:
        """The user is in ``group`` (admins are in every group)."""
        ids = ids or identities(msg.platform, msg.network, msg.user)
        return self.is_admin(msg, ids) or self._group(group, msg, ids, set())

    def allowed(
        self,
        command: str,
        permission: str | None,
        msg: ChatMessage,
        ids: Sequence[str] | None = None,
    ) -> bool:
        """Whether the user who sent ``msg`` may run ``command`` there.

        Admins may run everything. Otherwise the rules of ``"*"`` and of ``command`` apply (a
        matching ``deny`` entry refuses; a non-empty ``allow`` needs a matching entry), then the
        registration's ``permission`` group, if any, must contain the user.
        """
        ids = ids or identities(msg.platform, msg.network, msg.user)
        if self.is_admin(msg, ids):
            return True
        for key in ("*", command):
            rule = self.rules.get(key)
            if rule is None:
                continue
            if self._any(rule.deny, msg, ids):
                return False
            if rule.allow and not self._any(rule.allow, msg, ids):
                return False
        return permission is None or self._group(permission, msg, ids, set())

    def _group(self, group: str, msg: ChatMessage, ids: Sequence[str], seen: set[str]) -> bool:
        if group in seen:
            return False
        seen.add(group)
        return any(self._entry(e, msg, ids, seen) for e in self.groups.get(group, ()))

    def _any(self, entries: Iterable[str], msg: ChatMessage, ids: Sequence[str]) -> bool:
        return any(self._entry(e, msg, ids, set()) for e in entries)

    def _entry(self, entry: str, msg: ChatMessage, ids: Sequence[str], seen: set[str]) -> bool:
        kind, _, value = entry.partition(":")
        if kind == "group":
            return self._group(value, msg, ids, seen)
        if kind == "room":
            return glob_match(value, f"{msg.platform}/{msg.network}/{msg.room}")
        if kind == "network":
            return glob_match(value, f"{msg.platform}/{msg.network}")
        return any(glob_match(entry, i) for i in ids)


# -- rate limits ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reservation:
    """The answer of :meth:`RateLimiter.reserve`."""

    ok: bool
    delay: float = 0.0
    """Seconds to wait before running (0 unless queueing); when refused, the wait needed."""
    binding: int = -1
    """Index of the limit that imposed the wait (or refused), -1 when none did."""


@dataclass
class _Window:
    period: float
    events: deque[float]


class RateLimiter:
    """Sliding-window limits: at most ``count`` events in any ``period`` seconds, per key."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._notified: dict[str, float] = {}
        self._calls = 0

    def reserve(
        self,
        limits: Sequence[tuple[str, RateLimit]],
        *,
        max_delay: float = 0.0,
        now: float | None = None,
    ) -> Reservation:
        """Take one slot in every ``(key, limit)``, at most ``max_delay`` seconds from now.

        All or nothing: when a limit would need a longer wait, nothing is recorded and the
        reservation is refused.
        """
        now = self._clock() if now is None else now
        self._calls += 1
        if self._calls % 1024 == 0:
            self._sweep(now)
        at, binding = now, -1
        for i, (key, limit) in enumerate(limits):
            window = self._window(key, limit.period, now)
            if len(window.events) >= limit.count:
                free = window.events[-limit.count] + limit.period
                if free > at:
                    at, binding = free, i
        delay = at - now
        if delay > max_delay:
            return Reservation(False, delay, binding)
        for key, limit in limits:
            self._window(key, limit.period, now).events.append(at)
        return Reservation(True, delay, binding)

    def notify_once(self, key: str, period: float, now: float | None = None) -> bool:
        """True at most once per ``period`` seconds per ``key`` (for "slow down" notices)."""
        now = self._clock() if now is None else now
        if self._notified.get(key, float("-inf")) > now:
            return False
        self._notified[key] = now + period
        return True

    def _window(self, key: str, period: float, now: float) -> _Window:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(period, deque())
        window.period = period
        events = window.events
        while events and events[0] <= now - period:
            events.popleft()
        return window

    def _sweep(self, now: float) -> None:
        for key in [
            k for k, w in self._windows.items() if not w.events or w.events[-1] <= now - w.period
        ]:
            del self._windows[key]
        for key in [k for k, until in self._notified.items() if until <= now]:
            del self._notified[key]

    def __len__(self) -> int:
        return len(self._windows)
