"""Router: turns chat lines into command invocations (see "Commands" in docs/protocol.md).

It keeps the registrations command operators publish on ``{p}.command.register`` (in its
key-value bucket, so a restart loses none), reads ``{p}.chat.in.>`` (queue group ``router``),
recognises commands (prefix, addressed by name, or private), checks scope, permissions and
rate limits, parses the arguments and requests ``{p}.command.run.<name>``. It answers
``help`` itself. Run it under ``eevee up`` (``module = "operators.router"``) or alone::

    python -m operators.router --id router --nats-url nats://127.0.0.1:4222
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, Literal

from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from eeveepy import Operator
from eeveepy.bus.delivery import Handling, Once
from eeveepy.commands import (
    HELP,
    CommandLine,
    Permissions,
    RateLimiter,
    Registry,
    Rule,
    check_registration,
    identities,
    in_scope,
    parse_arguments,
    prefixes_for,
    rejected_subject,
    split_command,
    sync_subject,
    validation_reason,
)
from eeveepy.errors import (
    EeveeError,
    NoRespondersError,
    RemoteError,
    RequestTimeoutError,
    SubjectError,
)
from eeveepy.protocol.models import (
    ChatMessage,
    CommandInvocation,
    CommandRegistration,
    CommandRejected,
    CommandResult,
    CommandSync,
    Envelope,
    MessageStyle,
    Ping,
    Pong,
    RateLimit,
)
from eeveepy.protocol.subjects import validate_operator_id

KV_PREFIX = "reg."
"""Key of a registration in the router's bucket: ``reg.<name>.<operator-id>``."""

PING_TIMEOUT = 0.5
"""Seconds to wait for a clashing registration's operator to answer a ping."""


class CommandRules(BaseModel):
    """Who may run one command (see :class:`eeveepy.commands.Rule`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)


class RouterSettings(BaseModel):
    """Settings of the router operator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefixes: list[str] = Field(default_factory=lambda: ["!"])
    """Command prefixes (``!echo``)."""
    prefix_overrides: dict[str, list[str]] = Field(default_factory=dict)
    """Prefixes per ``platform``, ``platform/network`` or ``platform/network/room``; the most
    specific wins. An empty list: only addressed and private messages are commands there."""
    names: list[str] = Field(default_factory=lambda: ["eevee"])
    """Names the bot answers to: ``eevee: cmd``, ``eevee, cmd``, ``@eevee cmd``."""
    unknown_reply: bool = True
    """Answer an unknown command with a hint."""
    admins: list[str] = Field(default_factory=list)
    """Identity patterns of the users allowed everything."""
    groups: dict[str, list[str]] = Field(default_factory=dict)
    """Group name -> entries (identity patterns, group:, room:, network:)."""
    rules: dict[str, CommandRules] = Field(default_factory=dict)
    """Command name (or ``*`` for every command) -> allow/deny entries."""
    ignore: list[str] = Field(default_factory=list)
    """Identity patterns whose messages are dropped silently."""
    user_rate: RateLimit | None = None
    """Commands per user (all commands together)."""
    room_rate: RateLimit | None = None
    """Commands per room."""
    global_rate: RateLimit | None = None
    """Commands in total."""
    rate_mode: Literal["drop", "queue"] = "drop"
    """Over a limit: drop, or delay up to ``queue_max_delay`` seconds (then drop)."""
    queue_max_delay: float = Field(default=5.0, ge=0)
    timeout: float = Field(default=10.0, gt=0)
    """Seconds a command operator gets to answer."""
    max_in_flight: int = Field(default=256, ge=1)
    """Commands running at once; more wait their turn."""
    retry_for: float = Field(default=3.0, ge=0)
    """Seconds to keep asking a command whose operator is not running (it may be restarting)
    before answering that it is unavailable."""
    max_age: float = Field(default=120.0, ge=0)
    """Seconds after which a command that waited (the router was down, the bus was away) is
    not run any more: the user is told instead. 0: no limit."""

    @field_validator("prefix_overrides")
    @classmethod
    def _override_keys(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for key in value:
            if not key or key.count("/") > 2 or any(not part for part in key.split("/")[:2]):
                raise ValueError(
                    f"key {key!r}: use 'platform', 'platform/network' or 'platform/network/room'"
                )
        return value

    @field_validator("names")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        if any(not name.strip() for name in value):
            raise ValueError("names must not be empty")
        return value


class Router:
    """The router's state and handlers, bound to its :class:`Operator`."""

    def __init__(self, op: Operator[RouterSettings]) -> None:
        self.op = op
        self.registry = Registry()
        self.limiter = RateLimiter()
        self.permissions = Permissions()
        self._kv: KeyValue | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None
        self._once = Once()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.apply_settings()
        try:
            self._kv = await self.op.kv()
        except EeveeError as exc:
            self.op.log.warning(
                "no key-value store: registrations will not survive a restart", error=str(exc)
            )
        else:
            await self._load()
        await self.op.ipc.publish(sync_subject(self.op.subjects), CommandSync(router=self.op.id))

    def apply_settings(self) -> None:
        s = self.op.settings
        rules = {k: Rule(tuple(r.allow), tuple(r.deny)) for k, r in s.rules.items()}
        self.permissions = Permissions(s.admins, s.groups, rules, s.ignore)
        self._slots = asyncio.Semaphore(s.max_in_flight)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=0.5)

    async def _load(self) -> None:
        assert self._kv is not None
        loaded = 0
        watcher = await self._kv.watchall(ignore_deletes=True)
        try:
            async with asyncio.timeout(5.0):
                async for entry in watcher:
                    if entry is None:  # the end of what is stored
                        break
                    if not entry.key.startswith(KV_PREFIX) or entry.value is None:
                        continue
                    try:
                        reg = CommandRegistration.model_validate_json(entry.value)
                    except ValidationError as exc:
                        self.op.log.warning(
                            "stored registration dropped", key=entry.key, error=str(exc)
                        )
                        continue
                    if check_registration(reg):
                        continue
                    self.registry.add(reg)
                    loaded += 1
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
        self.op.log.info("registrations loaded", count=loaded)

    # -- registrations ---------------------------------------------------------------------

    async def on_register(self, env: Envelope[dict[str, Any]]) -> None:
        body = env.body
        claimed = body.get("operator")
        if not isinstance(claimed, str):
            claimed = env.source
        name = str(body.get("name", ""))
        if env.kind != CommandRegistration.KIND:
            await self._reject(name, claimed, f"kind must be {CommandRegistration.KIND!r}")
            return
        try:
            reg = CommandRegistration.model_validate(body)
        except ValidationError as exc:
            await self._reject(name, claimed, validation_reason(exc))
            return
        try:
            validate_operator_id(reg.operator)
        except SubjectError as exc:
            await self._reject(reg.name, env.source, f"operator: {exc}")
            return
        problem = check_registration(reg)
        if problem:
            await self._reject(reg.name, reg.operator, problem)
            return
        for other in self.registry.conflicts(reg):
            if other.operator != reg.operator and await self._gone(other.operator):
                self.op.log.info(
                    "stale registration replaced", name=other.name, owner=other.operator
                )
                await self._forget(other)
                continue
            clash = ", ".join(sorted({other.name, *other.aliases} & {reg.name, *reg.aliases}))
            await self._reject(
                reg.name,
                reg.operator,
                f"`{clash}` clashes with command `{other.name}` of operator {other.operator}",
            )
            return
        if self.registry.add(reg):
            self.op.log.info("command registered", name=reg.name, owner=reg.operator)
            await self._store(reg)

    async def _gone(self, operator_id: str) -> bool:
        """True when nobody answers ``operator_id``'s pings: its registrations are stale."""
        try:
            await self.op.ipc.request(
                self.op.subjects.operator_ping(operator_id), Ping(), Pong, timeout=PING_TIMEOUT
            )
        except NoRespondersError:
            return True
        except Exception:  # a timeout or an odd answer: someone is there
            return False
        return False

    async def _reject(self, name: str, operator: str, reason: str) -> None:
        self.op.log.warning("registration rejected", name=name, owner=operator, reason=reason)
        try:
            subject = rejected_subject(self.op.subjects, operator)
        except SubjectError:
            return  # no valid operator id to tell
        await self.op.ipc.publish(
            subject, CommandRejected(name=name, operator=operator, reason=reason)
        )

    async def _store(self, reg: CommandRegistration) -> None:
        if self._kv is None:
            return
        try:
            await self._kv.put(
                f"{KV_PREFIX}{reg.name}.{reg.operator}", reg.model_dump_json().encode()
            )
        except Exception as exc:
            self.op.log.error("could not store a registration", name=reg.name, error=repr(exc))

    async def _forget(self, reg: CommandRegistration) -> None:
        self.registry.remove(reg.name, reg.operator)
        if self._kv is None:
            return
        try:
            await self._kv.delete(f"{KV_PREFIX}{reg.name}.{reg.operator}")
        except Exception as exc:
            self.op.log.error("could not delete a registration", name=reg.name, error=repr(exc))

    # -- chat ------------------------------------------------------------------------------

    async def on_chat(self, env: Envelope[ChatMessage]) -> None:
        """A chat line on the fast path (plain subscription): handled at once."""
        self._take(env)

    async def on_stored(self, env: Envelope[ChatMessage]) -> None:
        """The same line from the stream: acknowledged once the fast path has answered it,
        handled here if the fast path never saw it (the router was down, the bus away)."""
        handling = self._take(env)
        if not handling.done:
            handling.keep(self.op.ipc.hold())

    def _take(self, env: Envelope[ChatMessage]) -> Handling:
        handling, first = self._once.take(env.id)
        if first:
            self._dispatch(env, handling)
        return handling

    def _dispatch(self, env: Envelope[ChatMessage], track: Handling) -> None:
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
        user = ids[0]
        limits: list[tuple[str, RateLimit]] = []
        labels: list[str] = []  # what each limit counts, for the notice
        if s.user_rate:
            limits.append((f"user:{user}", s.user_rate))
            labels.append("")
        if s.room_rate:
            limits.append((f"room:{msg.platform}/{msg.network}/{msg.room}", s.room_rate))
            labels.append(" in this room")
        if s.global_rate:
            limits.append(("global", s.global_rate))
            labels.append(" in all")
        if reg is not None and allowed and reg.rate_limit:
            limits.append((f"cmd:{reg.name}:{user}", reg.rate_limit))
            labels.append(f"`{reg.name}`")
        if limits:
            max_delay = s.queue_max_delay if s.rate_mode == "queue" else 0.0
            booked = self.limiter.reserve(limits, max_delay=max_delay)
            if not booked.ok:
                limit = limits[booked.binding][1]
                if self.limiter.notify_once(f"notice:{user}", limit.period):
                    text = _slow_down(limit, labels[booked.binding])
                    self._spawn(self._notice(env, text, track.start()))
                return
            delay = booked.delay
        else:
            delay = 0.0
        self._spawn(self._answer(env, line, prefixes, reg, allowed, delay, track.start()))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
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
    ) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        slots = self._slots or asyncio.Semaphore(1)
        async with slots:
            try:
                text = await self._run(env, line, prefixes, reg, allowed)
                # Stored before the line is acknowledged; a router killed in between handles
                # the line again and replies under the same id, which is kept once.
                if text:
                    await self.op.reply(env, text)
            except Exception as exc:
                self.op.log.exception("command dispatch failed", command=line.name, error=repr(exc))
                with contextlib.suppress(Exception):
                    await self.op.reply(env, f"`{line.name}` failed: internal error in the router")
            await track.finish()

    async def _run(
        self,
        env: Envelope[ChatMessage],
        line: CommandLine,
        prefixes: list[str],
        reg: CommandRegistration | None,
        allowed: bool,
    ) -> str:
        msg = env.body
        lead = _lead(msg, prefixes, self.op.settings.names)
        if line.name == HELP:
            if not allowed:
                return f"you are not allowed to run `{HELP}`"
            return self._help(msg, line.text, prefixes, lead)
        if reg is None:
            return f"unknown command `{line.name}`; try `{lead}{HELP}`"
        if not allowed:
            return f"you are not allowed to run `{reg.name}`"
        parsed = parse_arguments(self.registry.pattern(reg.name), line.text)
        if parsed is None:
            return f"usage: {reg.usage or lead + reg.name}"
        args, text = parsed
        inv = CommandInvocation(command=reg.name, args=args, text=text, message=msg)
        subject = self.op.subjects.command_run(reg.name)
        started = time.monotonic()
        try:
            result = await self._request(subject, inv, env.trace)
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

    async def _request(
        self, subject: str, inv: CommandInvocation, trace: str
    ) -> Envelope[CommandResult]:
        """Ask the command's operators, again while nobody answers for ``retry_for`` seconds
        (an operator being restarted) and once more after a timeout (its operator may have
        died while running it). Asking again is safe: a command runs once per chat line in
        an operator, and its replies, run again elsewhere, carry the same ids."""
        s = self.op.settings
        loop = asyncio.get_running_loop()
        give_up = loop.time() + s.retry_for
        delay, timed_out = 0.1, False
        while True:
            try:
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

    def _help(self, msg: ChatMessage, text: str, prefixes: list[str], lead: str) -> str:
        ids = identities(msg.platform, msg.network, msg.user)
        word = text.split()[0].lower() if text.split() else ""
        for prefix in sorted(prefixes, key=len, reverse=True):
            if prefix and word.startswith(prefix.lower()):
                word = word[len(prefix) :]
                break
        if not word:
            names = [HELP] + [
                reg.name
                for reg in self.registry.commands()
                if in_scope(reg.scope, msg)
                and self.permissions.allowed(reg.name, reg.permission, msg, ids)
            ]
            return f"commands: {', '.join(sorted(names))} (`{lead}{HELP} COMMAND` for details)"
        if word == HELP:
            return f"{lead}{HELP} [COMMAND]: list the commands you may run here, or show one"
        reg = self.registry.lookup(word)
        if reg is None or not in_scope(reg.scope, msg):
            return f"unknown command `{word}`; try `{lead}{HELP}`"
        out = reg.usage or f"{lead}{reg.name}"
        if reg.help:
            out += f" — {reg.help}"
        if reg.aliases:
            out += f" (aliases: {', '.join(reg.aliases)})"
        if not self.permissions.allowed(reg.name, reg.permission, msg, ids):
            out += " (you may not run it)"
        return out


def _slow_down(limit: RateLimit, label: str) -> str:
    """The notice for a dropped command: ``label`` is a `name` or where the limit applies."""
    n, per = limit.count, f"per {limit.period:g} s"
    if label.startswith("`"):
        return f"slow down: at most {n} {label} {per}"
    return f"slow down: at most {n} command{'' if n == 1 else 's'} {per}{label}"


def _lead(msg: ChatMessage, prefixes: list[str], names: list[str]) -> str:
    """How a command is written where ``msg`` was said: ``!``, ``eevee: `` or nothing."""
    if msg.private:
        return ""
    return prefixes[0] if prefixes else f"{names[0]}: " if names else ""


def create() -> Operator[RouterSettings]:
    """Build the router operator (nothing runs until ``run()`` or ``serve()``)."""
    op = Operator(RouterSettings, name="router")
    router = Router(op)
    op.ipc.subscribe("command.register", router.on_register)
    # Every chat line comes twice: at once on the fast path, and from the stream that keeps it
    # until it is answered (see "Delivery of chat input" in docs/protocol.md).
    op.ipc.subscribe("chat.in.>", router.on_chat, queue="router")
    op.ipc.subscribe("chat.in.>", router.on_stored, durable="router", backstop=True)
    op.on_start(router.start)
    op.on_reload(router.apply_settings)
    op.on_stop(router.stop)
    return op


def main() -> None:
    """Run the router operator as a process."""
    create().run()


if __name__ == "__main__":
    main()
