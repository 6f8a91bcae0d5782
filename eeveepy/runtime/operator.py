"""The operator runtime: what an operator author builds on, and the process contract it keeps.

A minimal operator::

    from eeveepy import ChatMessage, Operator

    def main() -> None:
        op = Operator()

        @op.ipc.subscribe("chat.in.>")
        async def on_chat(msg: ChatMessage) -> None:
            if msg.text.startswith("!echo "):
                await op.reply(msg, msg.text.removeprefix("!echo "))

        op.run()

:meth:`Operator.serve` is the whole life of the process, in this order: read the environment
(``EEVEE_*``, see :class:`Launch`), validate the settings, empty the cache directory, connect,
subscribe (deliveries wait until started), run the ``on_start`` hooks, publish
:class:`~eeveepy.models.Ready`, answer pings and control requests until asked to stop, then
drain (bounded), run the ``on_stop`` hooks (bounded) and close the connection.

Exit codes: 0 after a graceful stop, 1 on a crash or a forced stop (second SIGTERM/SIGINT),
69 (EX_UNAVAILABLE) when the bus cannot be reached at start, 78 (EX_CONFIG) when the launch
environment or the settings are invalid, so a supervisor can tell a config problem from a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import shutil
import signal
import sys
import tomllib
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Generic, TypeVar, overload

import structlog
from nats.aio.client import Client as NatsClient
from nats.js.errors import BadRequestError, BucketNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails
from structlog.typing import FilteringBoundLogger

from eeveepy.bus.client import BusConfig, barrier, connect
from eeveepy.bus.ipc import Ipc, Subscription
from eeveepy.errors import BusError, ConfigError, EeveeError, OperatorError, SubjectError
from eeveepy.logs import configure_operator_logging
from eeveepy.paths import Paths
from eeveepy.protocol.models import (
    ChatMessage,
    Control,
    ControlAction,
    ControlResult,
    Envelope,
    MessageStyle,
    OutgoingMessage,
    Ping,
    Pong,
    Ready,
)
from eeveepy.protocol.subjects import (
    DEFAULT_PREFIX,
    Subjects,
    validate_operator_id,
    validate_prefix,
)
from eeveepy.runtime.commands import command
from eeveepy.runtime.health import OperatorHealth
from eeveepy.runtime.kvstore import Bucket, KvStore

__all__ = [
    "ENV_CACHE_DIR",
    "ENV_CONNECT_TIMEOUT",
    "ENV_DATA_DIR",
    "ENV_NATS_PASSWORD",
    "ENV_NATS_URL",
    "ENV_NATS_USER",
    "ENV_OPERATOR_ID",
    "ENV_SETTINGS",
    "ENV_SETTINGS_FILE",
    "ENV_SUBJECT_PREFIX",
    "ENV_SUPERVISOR",
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "AnySettings",
    "Launch",
    "Operator",
    "OperatorState",
    "kv_bucket_name",
]

EXIT_OK: Final = 0
"""A graceful stop."""
EXIT_FAILURE: Final = 1
"""A crash (an ``on_start`` hook raised, ...) or a forced stop."""
EXIT_UNAVAILABLE: Final = 69
"""EX_UNAVAILABLE: the bus could not be reached at start."""
EXIT_CONFIG: Final = 78
"""EX_CONFIG: the launch environment or the settings are invalid; restarting will not help."""

ENV_OPERATOR_ID: Final = "EEVEE_OPERATOR_ID"
ENV_NATS_URL: Final = "EEVEE_NATS_URL"
ENV_NATS_USER: Final = "EEVEE_NATS_USER"
ENV_NATS_PASSWORD: Final = "EEVEE_NATS_PASSWORD"
ENV_SUBJECT_PREFIX: Final = "EEVEE_SUBJECT_PREFIX"
ENV_SETTINGS: Final = "EEVEE_SETTINGS"
ENV_SETTINGS_FILE: Final = "EEVEE_SETTINGS_FILE"
ENV_CACHE_DIR: Final = "EEVEE_CACHE_DIR"
ENV_DATA_DIR: Final = "EEVEE_DATA_DIR"
ENV_SUPERVISOR: Final = "EEVEE_SUPERVISOR"
ENV_CONNECT_TIMEOUT: Final = "EEVEE_CONNECT_TIMEOUT"

S = TypeVar("S", bound=BaseModel)
T = TypeVar("T")
Hook = Callable[[], Awaitable[None] | None]
HookT = TypeVar("HookT", bound=Hook)


class AnySettings(BaseModel):
    """The settings of an operator that declares no model: any JSON object, kept as given."""

    model_config = ConfigDict(frozen=True, extra="allow")


class OperatorState(StrEnum):
    """Where an :class:`Operator` is in its life."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    HALTED = "halted"
    STOPPING = "stopping"


def kv_bucket_name(operator_id: str) -> str:
    """The JetStream KV bucket of ``operator_id``: ``eevee_<id with . and - as _>``."""
    return "eevee_" + operator_id.replace(".", "_").replace("-", "_")


@dataclass(frozen=True)
class Launch:
    """What the process contract's environment says, validated.

    Build it with :meth:`from_env`; :meth:`Operator.run`'s command-line options are applied
    to the environment before that.
    """

    operator_id: str
    nats_url: str
    user: str | None
    password: str | None
    prefix: str
    settings_json: str
    settings_file: Path | None
    cache_dir: Path
    data_dir: Path
    supervisor: str | None
    connect_timeout: float

    @classmethod
    def from_env(cls, env: Mapping[str, str], default_id: str | None = None) -> Launch:
        """Read the ``EEVEE_*`` variables; raise :class:`ConfigError` listing every problem."""
        problems: list[tuple[str, str]] = []
        op_id = env.get(ENV_OPERATOR_ID) or default_id or ""
        if not op_id:
            problems.append((ENV_OPERATOR_ID, "not set (or pass --id)"))
        else:
            try:
                validate_operator_id(op_id)
            except SubjectError as exc:
                problems.append((ENV_OPERATOR_ID, str(exc)))
        url = env.get(ENV_NATS_URL, "")
        if not url:
            problems.append((ENV_NATS_URL, "not set (or pass --nats-url)"))
        prefix = env.get(ENV_SUBJECT_PREFIX) or DEFAULT_PREFIX
        try:
            validate_prefix(prefix)
        except SubjectError as exc:
            problems.append((ENV_SUBJECT_PREFIX, str(exc)))
        timeout = 5.0
        raw_timeout = env.get(ENV_CONNECT_TIMEOUT)
        if raw_timeout:
            try:
                timeout = float(raw_timeout)
                if not 0 < timeout < float("inf"):
                    raise ValueError
            except ValueError:
                problems.append((ENV_CONNECT_TIMEOUT, f"not a positive number: {raw_timeout!r}"))
        if problems:
            raise ConfigError("invalid operator environment", problems)
        defaults = Paths.default()  # platformdirs only computes paths: cheap
        cache = env.get(ENV_CACHE_DIR)
        data = env.get(ENV_DATA_DIR)
        settings_file = env.get(ENV_SETTINGS_FILE)
        return cls(
            operator_id=op_id,
            nats_url=url,
            user=env.get(ENV_NATS_USER) or None,
            password=env.get(ENV_NATS_PASSWORD),
            prefix=prefix,
            settings_json=env.get(ENV_SETTINGS) or "{}",
            settings_file=Path(settings_file) if settings_file else None,
            cache_dir=Path(cache) if cache else defaults.operator_cache_dir(op_id),
            data_dir=Path(data) if data else defaults.operator_data_dir(op_id),
            supervisor=env.get(ENV_SUPERVISOR) or None,
            connect_timeout=timeout,
        )


@dataclass
class _Hooks:
    start: list[Hook]
    reload: list[Hook]
    halt: list[Hook]
    resume: list[Hook]
    stop: list[Hook]


class Operator(Generic[S]):
    """One operator process: its bus connection, settings, hooks and lifecycle.

    ``settings_model`` is the pydantic model the settings are validated against (none: any
    JSON object, as :class:`AnySettings`). ``operator_id`` is the id used when neither ``--id``
    nor ``EEVEE_OPERATOR_ID`` gives one; ``name`` names the bus connection and the logger
    (default: the id). Nothing here connects or reads files: :meth:`serve` does.

    Attributes worth setting before :meth:`run`: ``drain_timeout`` (seconds to finish
    in-flight messages at stop, default 3), ``stop_timeout`` (seconds for all ``on_stop``
    hooks, default 1.5: with the drain that stays within the supervisor's 5 s before
    SIGKILL), ``hook_timeout`` (seconds for the ``on_reload``/``on_halt``/``on_resume``
    hooks of one request, default 10).
    """

    @overload
    def __init__(
        self: Operator[AnySettings],
        settings_model: None = None,
        *,
        operator_id: str | None = None,
        name: str | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: Operator[S],
        settings_model: type[S],
        *,
        operator_id: str | None = None,
        name: str | None = None,
    ) -> None: ...

    def __init__(
        self,
        settings_model: type[Any] | None = None,
        *,
        operator_id: str | None = None,
        name: str | None = None,
    ) -> None:
        self._model: type[Any] = settings_model or AnySettings
        self._default_id = operator_id
        self._name = name
        # Cheap guesses so `op.ipc` exists for decorators; serve() rebuilds it if they differ.
        guess = os.environ.get(ENV_OPERATOR_ID) or operator_id or name or "operator"
        prefix = os.environ.get(ENV_SUBJECT_PREFIX) or DEFAULT_PREFIX
        try:
            subjects = Subjects(validate_prefix(prefix))
        except SubjectError:  # reported by serve()
            subjects = Subjects()
        self.log: FilteringBoundLogger = _logger(name, guess)
        """A structlog logger bound with ``operator=<id>``."""
        self.ipc = Ipc(subjects, guess, logger=structlog.get_logger("eeveepy.ipc", operator=guess))
        """The bus: publish, subscribe (also as a decorator before :meth:`run`), request."""
        self.drain_timeout = 3.0
        self.stop_timeout = 1.5
        self.hook_timeout = 10.0
        self._hooks = _Hooks([], [], [], [], [])
        self.extensions: dict[type, object] = {}
        """Per-operator state of add-ons such as :mod:`eeveepy.runtime.commands`, keyed by class."""
        self.health = OperatorHealth(lambda: self.log)
        """Report problems (``degrade``/``ok``); pongs carry them to ``eevee ps``."""
        self.store = KvStore(self._kv_bucket, self.health, lambda: self.log)
        """Writes to the KV bucket that are retried until stored (see :mod:`eeveepy.kvstore`)."""
        self._launch: Launch | None = None
        self._settings: S | None = None
        self._state = OperatorState.STOPPED
        self._serving = False
        self._started = False
        self._ctl_halted = False
        self._nc: NatsClient | None = None
        self._kv: KeyValue | None = None
        self._runtime_subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._new_primitives()

    def _new_primitives(self) -> None:
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._ctl_lock = asyncio.Lock()
        self._kv_lock = asyncio.Lock()

    # -- what the author reads -------------------------------------------------------------

    @property
    def id(self) -> str:
        """The operator id (known once :meth:`serve` has read the environment)."""
        if self._launch is not None:
            return self._launch.operator_id
        if self._default_id is not None:
            return self._default_id
        raise OperatorError("the operator id is known once serve() has started")

    @property
    def settings(self) -> S:
        """The validated settings; replaced on a successful reload."""
        if self._settings is None:
            raise OperatorError("settings are loaded when serve() starts; read them in on_start")
        return self._settings

    @property
    def subjects(self) -> Subjects:
        """The subject builder for the bus prefix in use."""
        return self.ipc.subjects

    @property
    def cache_dir(self) -> Path:
        """A directory for caches, emptied at each start."""
        return self._require_launch().cache_dir

    @property
    def data_dir(self) -> Path:
        """A directory for data kept across restarts."""
        return self._require_launch().data_dir

    @property
    def state(self) -> OperatorState:
        """Where the operator is in its life."""
        return self._state

    def _require_launch(self) -> Launch:
        if self._launch is None:
            raise OperatorError("directories are known once serve() has started")
        return self._launch

    # -- hooks -----------------------------------------------------------------------------

    def on_start(self, fn: HookT) -> HookT:
        """Register a hook run after connecting, before Ready; if it raises, the start fails."""
        self._hooks.start.append(fn)
        return fn

    def on_reload(self, fn: HookT) -> HookT:
        """Register a hook run after new settings were validated and set (SIGHUP, ctl)."""
        self._hooks.reload.append(fn)
        return fn

    def on_halt(self, fn: HookT) -> HookT:
        """Register a hook run when delivery is paused by a ``halt`` control request."""
        self._hooks.halt.append(fn)
        return fn

    def on_resume(self, fn: HookT) -> HookT:
        """Register a hook run when delivery resumes after a halt."""
        self._hooks.resume.append(fn)
        return fn

    def on_stop(self, fn: HookT) -> HookT:
        """Register a hook run at a graceful stop, after the drain (bus publishing is over).

        ``await op.kv()`` still works here; every ``on_stop`` hook together is bounded by
        ``stop_timeout``.
        """
        self._hooks.stop.append(fn)
        return fn

    # -- services --------------------------------------------------------------------------

    async def kv(self) -> KeyValue:
        """The operator's JetStream key-value bucket (see :func:`kv_bucket_name`).

        Created on first use. Raises :class:`BusError` when JetStream is not available.
        """
        if self._kv is not None:
            return self._kv
        async with self._kv_lock:
            if self._kv is None:
                nc = self._nc
                if nc is None:
                    raise OperatorError("the bus is not connected yet; use kv() from on_start on")
                self._kv = await _open_bucket(nc, kv_bucket_name(self.id))
        return self._kv

    async def _kv_bucket(self) -> Bucket:
        await self.kv()  # opens (or creates) the bucket
        if self._nc is None:
            raise OperatorError("the bus is not connected")
        return Bucket(self._nc.jetstream(), kv_bucket_name(self.id))

    async def reply(
        self,
        msg: ChatMessage | Envelope[ChatMessage],
        text: str,
        *,
        private: bool | None = None,
        style: MessageStyle = MessageStyle.MESSAGE,
    ) -> str:
        """Answer a chat message where it came from; returns the published envelope's id.

        Sent to ``msg.room``, or to the sender alone when ``private`` (default: as the message
        was). The trace id is carried over (from the envelope, or from the message being
        handled).
        """
        chat = msg.body if isinstance(msg, Envelope) else msg
        private = chat.private if private is None else private
        out = OutgoingMessage(
            platform=chat.platform,
            network=chat.network,
            target=chat.user.id if private else chat.room,
            text=text,
            style=style,
            private=private,
            reply_to=chat.message_id,
        )
        trace = msg.trace if isinstance(msg, Envelope) else None
        if trace is None:
            current = self.ipc.current()
            trace = current.trace if current is not None else None
        subject = self.subjects.chat_out(chat.platform, chat.network)
        # Stored (the connector may be down), under an id that a repeat of this handling
        # gives again, so a repeated reply is kept once (see "Delivery" in docs/protocol.md).
        msg_id = self.ipc.reply_id(trace) if trace else None
        return await self.ipc.publish_stored(subject, out, trace=trace, msg_id=msg_id)

    def command(self, name: str, **options: Any) -> Callable[[T], T]:
        """Decorator: serve the chat command ``name``; the options are those of
        :func:`eeveepy.runtime.commands.command`."""
        return command(self, name, **options)

    # -- entry points ----------------------------------------------------------------------

    def run(self, argv: list[str] | None = None) -> None:
        """Run the operator as a process and exit with its code (the only ``sys.exit``).

        Options for development runs override the environment: ``--id``, ``--nats-url``,
        ``--prefix`` and ``--settings FILE`` (JSON or TOML, re-read on every reload).
        """
        parser = _parser(self._name)
        args = parser.parse_args(argv)
        if args.settings and not Path(args.settings).is_file():
            parser.error(f"--settings: no such file: {args.settings}")
        env = dict(os.environ)
        if args.id:
            env[ENV_OPERATOR_ID] = args.id
        if args.nats_url:
            env[ENV_NATS_URL] = args.nats_url
        if args.prefix:
            env[ENV_SUBJECT_PREFIX] = args.prefix
        if args.settings:
            env[ENV_SETTINGS_FILE] = str(Path(args.settings).resolve())
        if not structlog.is_configured():
            # Under a supervisor: JSON lines on stderr, which it relays to the bus and console.
            op_id = env.get(ENV_OPERATOR_ID) or self._default_id or self._name or "operator"
            configure_operator_logging(op_id, json_lines=bool(env.get(ENV_SUPERVISOR)))
        try:
            code = asyncio.run(self.serve(env))
        except KeyboardInterrupt:  # before the handlers were installed, or after
            code = 130
        sys.exit(code)

    async def serve(self, environ: Mapping[str, str] | None = None) -> int:
        """The whole lifecycle; returns the exit code. ``environ`` defaults to ``os.environ``.

        Installs SIGTERM/SIGINT/SIGHUP handlers on the running loop (main thread only) and
        restores the previous ones before returning.
        """
        if self._serving:
            raise OperatorError("this operator is already serving")
        self._serving = True
        loop = asyncio.get_running_loop()
        installed: list[tuple[int, Any]] = []
        try:
            try:
                self._setup(os.environ if environ is None else environ)
            except ConfigError as exc:
                self._log_problems("cannot start: " + exc.args[0], exc)
                return EXIT_CONFIG
            installed = self._install_signal_handlers(loop)
            return await self._lifecycle()
        finally:
            _restore_signal_handlers(loop, installed)
            self._state = OperatorState.STOPPED
            self._serving = False
            self._started = False
            self._ctl_halted = False
            self._new_primitives()

    def request_stop(self) -> None:
        """Ask for a graceful stop (what SIGTERM/SIGINT do); a second call forces it.

        Call it from the event loop's thread. Called before :meth:`serve`, it makes the next
        serve stop as soon as it has started (without announcing Ready).
        """
        if self._stop.is_set():
            self.log.warning("second stop request: stopping now")
            self._force.set()
        else:
            self.log.info("stop requested")
            self._stop.set()

    # -- lifecycle -------------------------------------------------------------------------

    def _setup(self, env: Mapping[str, str]) -> None:
        """Resolve the environment, settings and directories; raise ConfigError."""
        launch = Launch.from_env(env, self._default_id)
        self._launch = launch
        self.log = _logger(self._name, launch.operator_id)
        self._rebuild_ipc(Subjects(launch.prefix), launch.operator_id)
        self._settings = self._load_settings()
        try:
            _empty_dir(launch.cache_dir)
            launch.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError("unusable directory", [(str(exc.filename), str(exc))]) from None

    def _rebuild_ipc(self, subjects: Subjects, source: str) -> None:
        """Give ``ipc`` the real prefix and id, keeping the subscriptions declared so far."""
        old = self.ipc
        if old.subjects == subjects and old.source == source:
            return
        ipc = Ipc(subjects, source, logger=structlog.get_logger("eeveepy.ipc", operator=source))
        for sub in list(old._subs):  # declared only: nothing is connected before serve()
            moved = ipc.subscribe(old.subjects.relative(sub.pattern), sub.handler, queue=sub.queue)
            moved.gated = sub.gated
        self.ipc = ipc

    async def _lifecycle(self) -> int:
        try:
            return await self._phases()
        except BaseException:  # cancelled from outside: leave nothing connected behind
            await self._abort()
            raise

    async def _phases(self) -> int:
        self._state = OperatorState.STARTING
        code: int | None = EXIT_FAILURE
        try:
            finished, code = await self._unless_forced(self._start())
        except Exception as exc:
            self.log.exception("start failed", error=repr(exc))
            finished = True
        if finished and code is None:
            await self._stop.wait()
            code = EXIT_OK
        self._state = OperatorState.STOPPING
        if finished:
            finished, _ = await self._unless_forced(self._shutdown())
        if not finished or code is None:
            await self._abort()
            self.log.warning("stop forced")
            return EXIT_FAILURE
        self.log.info("stopped", code=code)
        return code

    async def _start(self) -> int | None:
        """Connect and announce; None when running, else the exit code."""
        launch = self._require_launch()
        ping = self.ipc.subscribe(self.subjects.operator_ping(self.id), self._on_ping)
        ctl = self.ipc.subscribe(self.subjects.operator_ctl(self.id), self._on_ctl)
        ping.gated = ctl.gated = False
        self._runtime_subs = [ping, ctl]
        try:
            self._nc = await connect(
                BusConfig(connect_timeout=launch.connect_timeout),
                name=self._name or launch.operator_id,
                url=launch.nats_url,
                user=launch.user,
                password=launch.password,
            )
        except BusError as exc:
            self.log.error("bus unavailable", error=str(exc))
            return EXIT_UNAVAILABLE
        self.ipc.halt()  # deliveries wait for on_start; pings and control do not
        await self.ipc.attach(self._nc)
        await barrier(self._nc)
        await self._call_hooks("start", self._hooks.start, timeout=None, raise_errors=True)
        self._started = True
        if not self._ctl_halted:
            self.ipc.resume()
        self._state = OperatorState.HALTED if self._ctl_halted else OperatorState.RUNNING
        if not self._stop.is_set():
            ready = Ready(operator=self.id, pid=os.getpid())
            await self.ipc.publish(self.subjects.operator_ready(self.id), ready)
            await self._nc.flush()
            self.log.info("ready", subject_prefix=self.subjects.prefix)
        return None

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.ipc.connected and not await self.ipc.drain(self.drain_timeout):
            self.log.warning("drain timed out: unhandled messages dropped", s=self.drain_timeout)
        await self._forget_runtime_subs()
        if self._started:
            await self._call_hooks("stop", self._hooks.stop, timeout=self.stop_timeout)
        await self.store.close(timeout=0.5)
        await self._close()

    async def _abort(self) -> None:
        """A forced stop: drop everything, bounded."""
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.ipc.detach()
                await self.store.close(timeout=0)
                await self._forget_runtime_subs()
                await self._close()

    async def _forget_runtime_subs(self) -> None:
        for sub in self._runtime_subs:
            await sub.unsubscribe()
        self._runtime_subs = []

    async def _close(self) -> None:
        nc, self._nc = self._nc, None
        self._kv = None
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), timeout=2.0)

    async def _unless_forced(self, coro: Coroutine[Any, Any, T]) -> tuple[bool, T | None]:
        """Run ``coro`` unless a forced stop comes first: ``(finished, result)``."""
        task = asyncio.ensure_future(coro)
        forced = asyncio.ensure_future(self._force.wait())
        try:
            await asyncio.wait({task, forced}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            forced.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
        if task.cancelled():
            return False, None
        return True, task.result()

    # -- pings, control, signals -----------------------------------------------------------

    async def _on_ping(self, msg: Ping) -> Pong:
        health = self.health
        state = "halted" if self._ctl_halted else "running"
        return Pong(operator=self.id, state=state, health=health.state, problem=health.problem)

    async def _on_ctl(self, msg: Control) -> ControlResult:
        return await self._control(msg.action)

    def _on_sighup(self) -> None:
        self.log.info("SIGHUP: reloading")
        task = asyncio.get_running_loop().create_task(self._control(ControlAction.RELOAD))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _control(self, action: ControlAction) -> ControlResult:
        async with self._ctl_lock:
            self.log.info("control", action=action.value)
            if action is ControlAction.HALT:
                return await self._halt()
            if action is ControlAction.RESUME:
                return await self._resume()
            if action is ControlAction.RELOAD:
                return await self._reload()
            if action is ControlAction.STOP:
                self._stop.set()
                return ControlResult(ok=True, message="stopping")
            return ControlResult(
                ok=False, message=f"{action.value!r} is not for an operator: ask the supervisor"
            )

    async def _halt(self) -> ControlResult:
        if self._ctl_halted:
            return ControlResult(ok=True, message="already halted")
        self._ctl_halted = True
        self.ipc.halt()
        if self._state is OperatorState.RUNNING:
            self._state = OperatorState.HALTED
        errors = await self._call_hooks("halt", self._hooks.halt, timeout=self.hook_timeout)
        return _result("halted", errors)

    async def _resume(self) -> ControlResult:
        if not self._ctl_halted:
            return ControlResult(ok=True, message="not halted")
        self._ctl_halted = False
        if self._state is OperatorState.HALTED:  # while starting, on_start's end resumes
            self.ipc.resume()
            self._state = OperatorState.RUNNING
        errors = await self._call_hooks("resume", self._hooks.resume, timeout=self.hook_timeout)
        return _result("resumed", errors)

    async def _reload(self) -> ControlResult:
        try:
            settings = self._load_settings()
        except ConfigError as exc:
            self._log_problems("reload rejected, settings unchanged", exc)
            return ControlResult(ok=False, message=str(exc))
        self._settings = settings
        errors = await self._call_hooks("reload", self._hooks.reload, timeout=self.hook_timeout)
        return _result("reloaded", errors)

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> list[tuple[int, Any]]:
        handlers: list[tuple[int, Callable[[], None]]] = [
            (signal.SIGTERM, self.request_stop),
            (signal.SIGINT, self.request_stop),
        ]
        if hasattr(signal, "SIGHUP"):
            handlers.append((signal.SIGHUP, self._on_sighup))
        installed: list[tuple[int, Any]] = []
        for sig, callback in handlers:
            previous = signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, callback)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                self.log.debug("signal handlers not installed", signal=sig)
                continue
            installed.append((sig, previous))
        return installed

    # -- hooks and settings ----------------------------------------------------------------

    async def _call_hooks(
        self, event: str, hooks: list[Hook], *, timeout: float | None, raise_errors: bool = False
    ) -> list[str]:
        """Run ``hooks`` in order, all within ``timeout``; return what failed."""
        errors: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                for hook in hooks:
                    name = getattr(hook, "__qualname__", repr(hook))
                    try:
                        result = hook()
                        if inspect.isawaitable(result):
                            await result
                    except Exception as exc:
                        if raise_errors:
                            raise
                        self.log.exception("hook failed", hook_event=event, hook=name)
                        errors.append(f"on_{event} hook {name} failed: {exc!r}")
        except TimeoutError:
            self.log.error("hooks timed out", hook_event=event, timeout=timeout)
            errors.append(f"on_{event} hooks did not finish within {timeout:g} s")
        return errors

    def _load_settings(self) -> S:
        """Read and validate the settings; raise :class:`ConfigError` listing every problem."""
        launch = self._require_launch()
        label, data = _read_settings(launch, self.log)
        if not isinstance(data, dict):
            raise ConfigError("invalid settings", [(label, "must be a JSON object")])
        try:
            settings: S = self._model.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(
                "invalid settings", [_problem(label, err) for err in exc.errors()]
            ) from None
        return settings

    def _log_problems(self, event: str, exc: ConfigError) -> None:
        if not exc.problems:
            self.log.error(event, error=str(exc))
        for where, what in exc.problems:
            self.log.error(event, where=where, problem=what)


# -- helpers ---------------------------------------------------------------------------------


def _result(done: str, errors: list[str]) -> ControlResult:
    if errors:
        return ControlResult(ok=False, message=f"{done}, but " + "; ".join(errors))
    return ControlResult(ok=True, message=done)


def _read_settings(launch: Launch, log: FilteringBoundLogger) -> tuple[str, Any]:
    """``(label, parsed data)`` from the settings file if it exists, else EEVEE_SETTINGS."""
    path = launch.settings_file
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            log.warning("settings file not found: using EEVEE_SETTINGS", path=str(path))
        except OSError as exc:
            raise ConfigError("cannot read the settings", [(str(path), str(exc))]) from None
        else:
            try:
                if path.suffix == ".toml":
                    return str(path), tomllib.loads(text)
                return str(path), json.loads(text)
            except ValueError as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
                raise ConfigError("invalid settings", [(str(path), str(exc))]) from None
    try:
        return ENV_SETTINGS, json.loads(launch.settings_json)
    except ValueError as exc:
        raise ConfigError("invalid settings", [(ENV_SETTINGS, f"not JSON: {exc}")]) from None


def _problem(label: str, err: ErrorDetails) -> tuple[str, str]:
    """One pydantic error as ``("<source>: <field path>", message)``."""
    path = ""
    for item in err["loc"]:
        path += f"[{item}]" if isinstance(item, int) else (f".{item}" if path else str(item))
    message = err["msg"]
    value = err.get("input")
    if isinstance(value, str | int | float | bool):
        shown = repr(value)
        message += f" (got {shown[:57] + '...' if len(shown) > 60 else shown})"
    return f"{label}: {path or '(top level)'}", message


def _logger(name: str | None, operator_id: str) -> FilteringBoundLogger:
    """A lazy structlog logger (configured when first used) bound with the operator id."""
    logger: FilteringBoundLogger = structlog.get_logger(name or operator_id, operator=operator_id)
    return logger


def _empty_dir(path: Path) -> None:
    """Create ``path`` or remove everything in it; refuse the filesystem root and home."""
    resolved = path.expanduser().resolve()
    if resolved in (Path(resolved.anchor), Path.home().resolve()):
        raise ConfigError("unsafe cache directory", [(ENV_CACHE_DIR, f"refusing to empty {path}")])
    resolved.mkdir(mode=0o700, parents=True, exist_ok=True)
    for child in resolved.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


async def _open_bucket(nc: NatsClient, bucket: str) -> KeyValue:
    js = nc.jetstream()
    try:
        try:
            return await js.key_value(bucket)
        except BucketNotFoundError:
            try:
                return await js.create_key_value(bucket=bucket)
            except BadRequestError:  # created meanwhile by another replica
                return await js.key_value(bucket)
    except EeveeError:
        raise
    except Exception as exc:
        raise BusError(f"cannot open the key-value bucket {bucket!r}: {exc!r}") from None


def _restore_signal_handlers(
    loop: asyncio.AbstractEventLoop, installed: list[tuple[int, Any]]
) -> None:
    for sig, previous in installed:
        loop.remove_signal_handler(sig)
        if previous is not None:
            with contextlib.suppress(ValueError, TypeError, OSError):
                signal.signal(sig, previous)


def _parser(name: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=name,
        description="Run this eevee operator. Under `eevee up` everything comes from the "
        "environment (EEVEE_*); these options override it for development runs.",
    )
    parser.add_argument("--id", help="operator id (EEVEE_OPERATOR_ID)")
    parser.add_argument("--nats-url", help="bus URL (EEVEE_NATS_URL)")
    parser.add_argument("--prefix", help="subject prefix (EEVEE_SUBJECT_PREFIX)")
    parser.add_argument(
        "--settings", metavar="FILE", help="settings file, .json or .toml (EEVEE_SETTINGS_FILE)"
    )
    return parser
