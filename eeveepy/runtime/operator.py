"""The operator runtime: what an operator author builds on.

A minimal operator::

    from eeveepy import ChatMessage, Operator

    def main() -> None:
        op = Operator()

        @op.ipc.subscribe("chat.in.>")
        async def on_chat(msg: ChatMessage) -> None:
            if msg.text.startswith("!echo "):
                await op.reply(msg, msg.text.removeprefix("!echo "))

        op.run()

:meth:`Operator.serve` is the whole life of the process: read the environment (``EEVEE_*``,
see :mod:`eeveepy.runtime.contract`), validate the settings (:mod:`eeveepy.runtime.settings`),
create the data and cache directories (the supervisor empties the cache before each start),
then run (:mod:`eeveepy.runtime.lifecycle`): connect, run the ``on_start`` hooks, announce
Ready, answer pings and control requests until asked to stop, drain, run the ``on_stop``
hooks and close. The exit code tells a supervisor a config problem (78) from an unreachable
bus (69) from a crash (1).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import structlog
from nats.js.kv import KeyValue
from pydantic import BaseModel
from structlog.typing import FilteringBoundLogger

from eeveepy.aio import ENV_LOOP, loop_factory
from eeveepy.aio import run as run_loop
from eeveepy.bus.ipc import Ipc
from eeveepy.errors import ConfigError, OperatorError
from eeveepy.logs import configure_operator_logging
from eeveepy.protocol.models import ChatMessage, Envelope, MessageStyle, OutgoingMessage
from eeveepy.protocol.subjects import Subjects
from eeveepy.runtime.commands import command
from eeveepy.runtime.contract import (
    ENV_CHECK,
    ENV_OPERATOR_ID,
    ENV_SUPERVISOR,
    EXIT_CONFIG,
    EXIT_OK,
    Launch,
    environ_with_options,
)
from eeveepy.runtime.health import OperatorHealth
from eeveepy.runtime.hooks import HookEvent, Hooks, HookT
from eeveepy.runtime.kv import KvAccess
from eeveepy.runtime.kvstore import KvStore
from eeveepy.runtime.lifecycle import Lifecycle, OperatorState, Timeouts
from eeveepy.runtime.settings import AnySettings, load_settings, log_problems
from eeveepy.runtime.signals import capture_signals
from eeveepy.runtime.title import operator_title, set_title

__all__ = ["Operator"]

S = TypeVar("S", bound=BaseModel)
T = TypeVar("T")

_PLACEHOLDER_ID = "operator"


class Operator(Generic[S]):
    """One operator process: its bus connection, settings, hooks and lifecycle.

    ``settings_model`` is the pydantic model the settings are validated against (none: any
    JSON object, as :class:`~eeveepy.runtime.settings.AnySettings`). ``operator_id`` is the
    id used when neither ``--id`` nor ``EEVEE_OPERATOR_ID`` gives one; ``name`` names the bus
    connection and the logger (default: the id). Nothing here connects, reads files or reads
    the environment: :meth:`serve` does. Until then :attr:`ipc` works under the default prefix
    and ``operator_id`` (or ``name``): subscriptions declared on it follow the real prefix and
    id once they are known.

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
        provisional = operator_id or name or _PLACEHOLDER_ID
        self.log: FilteringBoundLogger = _logger(name, provisional)
        """A structlog logger bound with ``operator=<id>``."""
        self.ipc = Ipc(Subjects(), provisional, logger=_ipc_logger(provisional))
        """The bus: publish, subscribe (also as a decorator before :meth:`run`), request."""
        self.drain_timeout = 3.0
        self.stop_timeout = 1.5
        self.hook_timeout = 10.0
        self.extensions: dict[type, object] = {}
        """Per-operator state of add-ons such as :mod:`eeveepy.runtime.commands`, keyed by class."""
        self.health = OperatorHealth(lambda: self.log)
        """Report problems (``degrade``/``ok``); pongs carry them to ``eevee ps``."""
        self._hooks = Hooks()
        self._launch: Launch | None = None
        self._settings: S | None = None
        self._serving = False
        self._kv = KvAccess(  # (called once serving)
            lambda: self._life.nc,
            lambda: self.id,
            lambda: self.ipc.subjects.prefix,
            lambda: self._require_launch().inbox_prefix is not None,
        )
        self.store = KvStore(self._kv.bucket, self.health, lambda: self.log)
        """Writes to the KV bucket that are retried until stored (see :mod:`eeveepy.kvstore`)."""
        self._life = Lifecycle(
            self.ipc,
            self._hooks,
            self.health,
            self.store,
            reload_settings=self._reload_settings,
            log=lambda: self.log,
        )

    # -- what the author reads -------------------------------------------------------------

    @property
    def name(self) -> str | None:
        """The name given at construction (the id's default in development runs), or None."""
        return self._name

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
        """A directory for caches, emptied by the supervisor before each start (a standalone
        development run finds it as the last run left it)."""
        return self._require_launch().cache_dir

    @property
    def data_dir(self) -> Path:
        """A directory for data kept across restarts."""
        return self._require_launch().data_dir

    @property
    def state(self) -> OperatorState:
        """Where the operator is in its life."""
        return self._life.state

    def _require_launch(self) -> Launch:
        if self._launch is None:
            raise OperatorError("directories are known once serve() has started")
        return self._launch

    # -- hooks -----------------------------------------------------------------------------

    def on_start(self, fn: HookT) -> HookT:
        """Register a hook run after connecting, before Ready; if it raises, the start fails."""
        return self._hooks.add(HookEvent.START, fn)

    def on_reload(self, fn: HookT) -> HookT:
        """Register a hook run after new settings were validated and set (SIGHUP, ctl)."""
        return self._hooks.add(HookEvent.RELOAD, fn)

    def on_halt(self, fn: HookT) -> HookT:
        """Register a hook run when delivery is paused by a ``halt`` control request."""
        return self._hooks.add(HookEvent.HALT, fn)

    def on_resume(self, fn: HookT) -> HookT:
        """Register a hook run when delivery resumes after a halt."""
        return self._hooks.add(HookEvent.RESUME, fn)

    def on_stop(self, fn: HookT) -> HookT:
        """Register a hook run at a graceful stop, after the drain (bus publishing is over).

        ``await op.kv()`` still works here; every ``on_stop`` hook together is bounded by
        ``stop_timeout``.
        """
        return self._hooks.add(HookEvent.STOP, fn)

    # -- services --------------------------------------------------------------------------

    async def kv(self) -> KeyValue:
        """The operator's JetStream key-value bucket, created on first use.

        Its name is :func:`~eeveepy.bus.names.kv_bucket_name` of the id and prefix. Raises
        :class:`BusError` when JetStream is not available.
        """
        return await self._kv.key_value()

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
        env = environ_with_options(os.environ, argv, prog=self._name)
        if env.get(ENV_CHECK):
            sys.exit(self.check(env))
        op_id = env.get(ENV_OPERATOR_ID) or self._default_id or self._name or _PLACEHOLDER_ID
        set_title(operator_title(op_id))
        if not structlog.is_configured():
            # Under a supervisor: JSON lines on stderr, which it relays to the bus and console.
            configure_operator_logging(op_id, json_lines=bool(env.get(ENV_SUPERVISOR)))
        try:
            factory = loop_factory(env.get(ENV_LOOP))
        except OperatorError as exc:
            print(f"{op_id}: {exc}", file=sys.stderr)
            sys.exit(EXIT_CONFIG)
        try:
            code = run_loop(self.serve(env), factory)
        except KeyboardInterrupt:  # before the handlers were installed, or after
            code = 130
        sys.exit(code)

    def check(self, environ: Mapping[str, str]) -> int:
        """Validate the launch environment and settings only (``eevee config check``, see
        :data:`~eeveepy.runtime.contract.ENV_CHECK`): print the problems as one JSON line on
        stdout; 0 when valid, :data:`EXIT_CONFIG` when not. Never connects."""
        try:
            launch = Launch.from_env(environ, self._default_id)
            load_settings(launch, self._model, structlog.get_logger("eeveepy.check"))
        except ConfigError as exc:
            found = exc.problems or [("settings", str(exc))]
            print(json.dumps({"problems": found}), flush=True)
            return EXIT_CONFIG
        print(json.dumps({"problems": []}), flush=True)
        return EXIT_OK

    async def serve(self, environ: Mapping[str, str] | None = None) -> int:
        """The whole lifecycle; returns the exit code. ``environ`` defaults to ``os.environ``.

        Installs SIGTERM/SIGINT/SIGHUP handlers on the running loop (main thread only) and
        restores the previous ones before returning.
        """
        if self._serving:
            raise OperatorError("this operator is already serving")
        self._serving = True
        try:
            try:
                launch = self._setup(os.environ if environ is None else environ)
            except ConfigError as exc:
                log_problems(self.log, "cannot start: " + exc.args[0], exc)
                return EXIT_CONFIG
            timeouts = Timeouts(self.drain_timeout, self.stop_timeout, self.hook_timeout)
            life = self._life
            with capture_signals(
                asyncio.get_running_loop(),
                stop=self.request_stop,
                reload=life.reload_soon,
                log=self.log,
            ):
                return await life.run(launch, self._name or launch.operator_id, timeouts)
        finally:
            self._life.reset()
            self._kv.reset()
            self._serving = False

    def request_stop(self) -> None:
        """Ask for a graceful stop (what SIGTERM/SIGINT do); a second call forces it.

        Call it from the event loop's thread. Called before :meth:`serve`, it makes the next
        serve stop as soon as it has started (without announcing Ready).
        """
        self._life.request_stop()

    # -- settings and directories ----------------------------------------------------------

    def _setup(self, env: Mapping[str, str]) -> Launch:
        """Resolve the environment, settings and directories; raise ConfigError."""
        launch = Launch.from_env(env, self._default_id)
        self._launch = launch
        self.log = _logger(self._name, launch.operator_id)
        if self.ipc.subjects.prefix != launch.prefix or self.ipc.source != launch.operator_id:
            self.ipc.rebind(
                Subjects(launch.prefix),
                launch.operator_id,
                logger=_ipc_logger(launch.operator_id),
            )
        self._settings = load_settings(launch, self._model, self.log)
        try:
            # The supervisor empties the cache directory before each start (the process
            # contract, for every language); the runtime only makes sure both exist.
            _make_dir(launch.cache_dir)
            _make_dir(launch.data_dir)
        except OSError as exc:
            raise ConfigError("unusable directory", [(str(exc.filename), str(exc))]) from None
        return launch

    def _reload_settings(self) -> None:
        self._settings = load_settings(self._require_launch(), self._model, self.log)


def _make_dir(path: Path) -> None:
    """``path.mkdir(mode=0o700, parents=True, exist_ok=True)``, through :mod:`os`: a directory
    that exists (under a supervisor both do) is one ``stat``, and runs none of pathlib's code
    (whose pages a forked operator would copy)."""
    name = str(path)
    if not os.path.isdir(name):
        os.makedirs(name, 0o700, exist_ok=True)


def _logger(name: str | None, operator_id: str) -> FilteringBoundLogger:
    """A lazy structlog logger (configured when first used) bound with the operator id."""
    logger: FilteringBoundLogger = structlog.get_logger(name or operator_id, operator=operator_id)
    return logger


def _ipc_logger(operator_id: str) -> Any:
    return structlog.get_logger("eeveepy.ipc", operator=operator_id)
