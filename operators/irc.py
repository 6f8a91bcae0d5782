"""IRC: the connector of the ``irc`` platform, one operator per network (``irc.<network>``).

It keeps one client connection to an IRC server and translates between IRC and the bus:

- **Inbound.** Channel and private ``PRIVMSG``, ``NOTICE`` and CTCP ``ACTION`` become
  :class:`~eeveepy.models.ChatMessage` on ``{p}.chat.in.irc.<network>.<room>`` (room: the
  channel, or the sender's nick for a private message); ``JOIN``, ``PART``, ``QUIT``,
  ``KICK``, ``NICK``, ``TOPIC``, ``INVITE`` and the connection going up or down become
  :class:`~eeveepy.models.ChatEvent` on ``{p}.chat.event.irc.<network>.<event>``. Services
  accounts come from the IRCv3 ``account-tag``, ``extended-join`` and ``account-notify``
  capabilities and WHOX, when the server offers them. The bot's own lines are never echoed.
- **Outbound.** ``{p}.chat.out.irc.<network>`` (:class:`~eeveepy.models.OutgoingMessage`):
  simple markdown becomes IRC formatting, text is split into lines that fit the 512-byte limit
  (never inside a UTF-8 character) and sent through a token bucket, round-robin across
  targets so one busy channel cannot starve the others. CR, LF and NUL never reach the socket
  (:func:`eeveepy.irc_text.format_line` builds every line), and text cannot start a CTCP
  sequence: ``\x01`` and other non-formatting control characters are shown as ``␁``... and
  only an ``action`` style is wrapped as ``\x01ACTION ...\x01``
  (:func:`eeveepy.irc_safety.outgoing_lines`). A target that is not one channel or one nick
  (``0``, ``#a,#b``, spaces...) is refused: logged and dead-lettered, never sent.
- **Control.** Requests on ``{p}.chat.ctl.irc.<network>``
  (:class:`~eeveepy.models.ConnectorControl`: join, part, nick, names) are answered with
  :class:`~eeveepy.models.ConnectorControlResult`; a room that is not one channel of the
  server (``0``, commas, spaces, no CHANTYPES prefix, too long) is refused with ``ok: false``.
- **Resilience.** The connection runs in a background task, so the operator answers the
  supervisor's pings while the server is away. After a disconnect, a ping timeout or a refused
  connection it reconnects with exponential backoff and jitter between ``reconnect_min`` and
  ``reconnect_max``, rejoins its channels, falls back to alternate nicks on a collision and
  tries to reclaim its main nick every ``reclaim_nick_interval`` seconds. A SASL failure is
  reported once per attempt (an error log and a ``disconnected`` event saying "SASL
  authentication failed") and is retried only with the normal backoff.

The IRC protocol client is written here on asyncio streams rather than taken from a library,
so that every byte written goes through one sanitising path, line order is kept, and
reconnection, SASL failure and ping timeouts follow this connector's rules.

Settings: :class:`IrcSettings`. Run it under ``eevee up`` (``module = "operators.irc"``) or
alone::

    python -m operators.irc --id irc.local --nats-url nats://127.0.0.1:4222 --settings irc.toml
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import ssl
import time
from collections.abc import Callable
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from eeveepy import Operator
from eeveepy.bus.ipc import Subscription
from eeveepy.connector.outbox import Outbox
from eeveepy.errors import EeveeError
from eeveepy.irc_safety import (
    ACTION_OVERHEAD,
    DEFAULT_CHANTYPES,
    MAX_CHANNEL_BYTES,
    MAX_NICK_BYTES,
    RFC_CHANTYPES,
    channel_problem,
    defuse,
    key_problem,
    nick_problem,
    outgoing_lines,
    target_problem,
)
from eeveepy.irc_text import (
    FairQueue,
    IrcLine,
    TokenBucket,
    format_line,
    irc_lower,
    mentions,
    parse_ctcp_action,
    parse_line,
    sanitize,
    split_source,
    strip_formatting,
    text_budget,
)
from eeveepy.protocol.codec import dead_letter, dump_model
from eeveepy.protocol.models import (
    ChatEvent,
    ChatEventType,
    ChatMessage,
    ChatUser,
    ConnectorControl,
    ConnectorControlResult,
    Envelope,
    MessageStyle,
    OutgoingMessage,
)

PLATFORM: Final = "irc"
VERSION: Final = "eevee IRC connector"
MAX_QUEUED_LINES: Final = 5000
"""Egress lines kept while the server is slow or away; beyond that the oldest are dropped
(with a warning)."""
CTL_TIMEOUT: Final = 10.0
"""Seconds a control request waits for the server's answer."""
SEND_TIMEOUT: Final = 15.0
DRAIN_ABOVE: Final = 64 * 1024
"""Bytes buffered in the socket before a write waits for the server to take them."""
SASL_TIMEOUT: Final = 20.0
WANTED_CAPS: Final = frozenset(
    {"multi-prefix", "account-tag", "account-notify", "extended-join", "message-tags", "chghost"}
)
_JOIN_ERRORS: Final = frozenset({"403", "405", "437", "471", "473", "474", "475", "476", "477"})
_NICK_ERRORS: Final = frozenset({"431", "432", "433", "436", "437", "484"})
_WHOX_TOKEN: Final = "417"


class IrcConnectorError(EeveeError):
    """The IRC connection failed or ended (the connector reconnects)."""


class SaslFailedError(IrcConnectorError):
    """SASL authentication failed; already reported, reconnect with the normal backoff."""


# -- settings ----------------------------------------------------------------------------------


class Channel(BaseModel):
    """A channel to join; a plain string ``"#foo"`` is accepted as ``{"name": "#foo"}``.

    The name must be one channel (:func:`~eeveepy.irc_safety.channel_problem` with the RFC 2812
    prefixes ``#&+!``: not ``0``, no comma, whitespace or control character), the key one key.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    key: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @field_validator("name")
    @classmethod
    def _one_channel(cls, name: str) -> str:
        problem = channel_problem(name, RFC_CHANTYPES, MAX_CHANNEL_BYTES)
        if problem is not None:
            raise ValueError(f"not a valid IRC channel: {problem}")
        return name

    @field_validator("key")
    @classmethod
    def _one_key(cls, key: str | None) -> str | None:
        problem = None if key is None else key_problem(key)
        if problem is not None:
            raise ValueError(problem)
        return key


class IrcSettings(BaseModel):
    """Settings of an ``irc.<network>`` operator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(min_length=1)
    port: int = Field(default=6667, ge=1, le=65535)
    tls: bool = False
    tls_verify: bool = True
    ca_file: str | None = Field(default=None, description="CA bundle to verify the server with.")
    nick: str = Field(default="eevee", min_length=1, pattern=r"^[^\s,:*?!@#$\x00]+$")
    alt_nicks: list[str] = Field(default_factory=list)
    username: str | None = Field(default=None, description="Ident; default: the nick.")
    realname: str = "eevee bot"
    password: str | None = Field(default=None, description="Server password (PASS).")
    sasl_mechanism: Literal["PLAIN", "EXTERNAL"] | None = Field(
        default=None, description="Default: PLAIN when sasl_username/sasl_password are set."
    )
    sasl_username: str | None = None
    sasl_password: str | None = None
    client_cert: str | None = Field(default=None, description="PEM client certificate (TLS).")
    client_key: str | None = Field(default=None, description="Its key, if not in client_cert.")
    channels: list[Channel] = Field(default_factory=list)
    network: str | None = Field(
        default=None, description="Network name on the bus; default: the id after 'irc.'."
    )
    egress_lines: int = Field(default=4, ge=0, description="Lines per egress_period; 0: no limit.")
    egress_period: float = Field(default=2.0, gt=0)
    egress_burst: int = Field(default=5, ge=1)
    reconnect_min: float = Field(default=1.0, gt=0)
    reconnect_max: float = Field(default=60.0, gt=0)
    reclaim_nick_interval: float = Field(default=30.0, gt=0)
    command_prefixes: list[str] = Field(
        default_factory=lambda: ["!"], description="Informational; the router decides."
    )
    ping_interval: float = Field(
        default=120.0, gt=0, description="Seconds of silence before the connector PINGs."
    )
    ping_timeout: float = Field(
        default=60.0, gt=0, description="Seconds to wait for any data after that PING."
    )
    connect_timeout: float = Field(
        default=15.0, gt=0, description="Seconds for TCP+TLS connect, and x4 for registration."
    )

    @model_validator(mode="after")
    def _check(self) -> IrcSettings:
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must be at least reconnect_min")
        if self.sasl_mechanism == "EXTERNAL" and not self.client_cert:
            raise ValueError("sasl_mechanism EXTERNAL needs client_cert (and tls)")
        if self.sasl_mechanism == "PLAIN" and not (self.sasl_username and self.sasl_password):
            raise ValueError("sasl_mechanism PLAIN needs sasl_username and sasl_password")
        if self.client_cert and not self.tls:
            raise ValueError("client_cert needs tls = true")
        return self

    @property
    def sasl(self) -> Literal["PLAIN", "EXTERNAL"] | None:
        """The SASL mechanism to use, if any."""
        if self.sasl_mechanism is not None:
            return self.sasl_mechanism
        if self.sasl_username and self.sasl_password:
            return "PLAIN"
        return None


_SESSION_FIELDS: Final = frozenset(
    IrcSettings.model_fields.keys()
    - {
        "channels",
        "egress_lines",
        "egress_period",
        "egress_burst",
        "reconnect_min",
        "reconnect_max",
        "reclaim_nick_interval",
        "command_prefixes",
        "network",
    }
)
"""Settings whose change needs a new connection."""


def network_name(settings: IrcSettings, operator_id: str) -> str:
    """The network name on the bus: the setting, else the id after ``irc.``, else the host."""
    if settings.network:
        return settings.network
    if operator_id.startswith("irc.") and len(operator_id) > 4:
        return operator_id[4:]
    return settings.host


def _settle(done: asyncio.Future[None] | None) -> None:
    """Mark a queued message's last line as handled (written or dropped)."""
    if done is not None and not done.done():
        done.set_result(None)


def backoff_delay(attempt: int, low: float, high: float, rnd: Callable[[], float]) -> float:
    """Delay before reconnect ``attempt`` (0-based): exponential, jittered, in ``[low, high]``."""
    ceiling = min(high, low * float(2 ** min(attempt, 30)))
    return max(low, ceiling * (0.5 + 0.5 * rnd()))


# -- the connector -----------------------------------------------------------------------------

_Matcher = Callable[[IrcLine], Any]


class IrcConnector:
    """The connector's state and handlers, bound to its :class:`Operator`."""

    def __init__(self, op: Operator[IrcSettings]) -> None:
        self.op = op
        self.network = ""
        self._settings: IrcSettings | None = None
        self._subs: list[Subscription] = []
        self._run_task: asyncio.Task[None] | None = None
        self._egress_task: asyncio.Task[None] | None = None
        # (command, text, done): ``done`` is set once the line is written (or dropped).
        self._queue: FairQueue[tuple[str, str, asyncio.Future[None] | None]] = FairQueue(
            self._lower
        )
        self.outbox = Outbox(op, self._out)
        self._queued = asyncio.Event()
        self._bucket = TokenBucket(4, 2.0, 5)
        self._wanted: dict[str, Channel] = {}
        self._want_nick = "eevee"
        self._rnd = random.Random()
        self._registered = asyncio.Event()
        self._reclaim_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._reset_session()

    # -- session state -----------------------------------------------------------------------

    def _reset_session(self) -> None:
        self._writer: asyncio.StreamWriter | None = None
        self._registered.clear()
        self._registered_at: float | None = None
        self._nick = ""
        self._nick_tries = 0
        self._user_host: str | None = None
        self._server = ""
        self._caps: set[str] = set()
        self._ls_caps: dict[str, str] = {}
        self._cap_done = False
        self._sasl_state: Literal["none", "running", "ok", "failed"] = "none"
        self._account: str | None = None
        self._isupport: dict[str, str] = {}
        self._joined: dict[str, str] = {}
        self._accounts: dict[str, str] = {}
        self._waiters: list[tuple[_Matcher, asyncio.Future[Any]]] = []
        self._disconnect_reported = False

    @property
    def settings(self) -> IrcSettings:
        """The settings the current connection uses."""
        return self._settings or self.op.settings

    @property
    def connected(self) -> bool:
        """Registered with the server (001 received) and not disconnected since."""
        return self._registered.is_set() and self._writer is not None

    def _lower(self, name: str) -> str:
        return irc_lower(name, getattr(self, "_isupport", {}).get("CASEMAPPING", "rfc1459"))

    def _same(self, a: str, b: str) -> bool:
        return self._lower(a) == self._lower(b)

    def _chantypes(self) -> str:
        return self._isupport.get("CHANTYPES", DEFAULT_CHANTYPES)

    def _is_channel(self, name: str) -> bool:
        return bool(name) and name[0] in self._chantypes()

    def _isupport_int(self, key: str, default: int) -> int:
        value = self._isupport.get(key, "")
        return int(value) if value.isascii() and value.isdigit() and int(value) > 0 else default

    def _channel_problem(self, name: str) -> str | None:
        """Why ``name`` is not one channel of this server (its CHANTYPES, CHANNELLEN), or None."""
        return channel_problem(
            name, self._chantypes(), self._isupport_int("CHANNELLEN", MAX_CHANNEL_BYTES)
        )

    def _prefix_chars(self) -> str:
        prefix = self._isupport.get("PREFIX", "(ov)@+")
        return prefix.partition(")")[2] or "@+"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe and start the connection in the background (never waits for IRC)."""
        settings = self.op.settings
        self._settings = settings
        self.network = network_name(settings, self.op.id)
        self._want_nick = settings.nick
        self._wanted = {self._lower(c.name): c for c in settings.channels}
        self._bucket = self._new_bucket(settings)
        await self._subscribe()
        self._egress_task = asyncio.create_task(self._egress(), name="irc-egress")
        self._run_task = asyncio.create_task(self._run(), name="irc-connection")
        self.op.log.info(
            "irc connector started", network=self.network, host=settings.host, port=settings.port
        )

    async def _subscribe(self) -> None:
        ipc, subjects = self.op.ipc, self.op.subjects
        ctl = subjects.chat_ctl(PLATFORM, self.network)
        await self.outbox.open(PLATFORM, self.network)
        self._subs = [await ipc.subscribe(ctl, self.on_ctl)]

    async def stop(self) -> None:
        """Say goodbye to the server and stop the tasks (the bus is already drained)."""
        self._stopping = True
        await self.outbox.close()  # what was not written yet is delivered again at next start
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._send("QUIT", "shutting down"), 0.5)
        for task in (self._run_task, self._egress_task):
            if task is not None:
                task.cancel()
        for task in (self._run_task, self._egress_task):
            if task is not None:
                with contextlib.suppress(BaseException):
                    await task
        self._run_task = self._egress_task = None

    async def reload(self) -> None:
        """Apply new settings: live where possible, with a new connection where needed."""
        old, new = self.settings, self.op.settings
        self._settings = new
        self._bucket = self._new_bucket(new)
        network = network_name(new, self.op.id)
        changed = {k for k in IrcSettings.model_fields if getattr(old, k) != getattr(new, k)}
        if network != self.network or changed & _SESSION_FIELDS:
            self.op.log.info("irc settings changed: reconnecting", changed=sorted(changed))
            if self._run_task is not None:
                self._run_task.cancel()
                with contextlib.suppress(BaseException):
                    await self._run_task
            await self._report_disconnected("reconnecting with new settings")
            if network != self.network:
                for sub in self._subs:
                    await sub.unsubscribe()
                self.network = network
                self._queue.clear()
                await self._subscribe()
            self._want_nick = new.nick
            self._wanted = {self._lower(c.name): c for c in new.channels}
            self._run_task = asyncio.create_task(self._run(), name="irc-connection")
            return
        if old.channels != new.channels:
            wanted = {self._lower(c.name): c for c in new.channels}
            if self.connected:
                for key, chan in wanted.items():
                    if key not in self._joined:
                        await self._send("JOIN", chan.name, *([chan.key] if chan.key else []))
                for key in set(self._wanted) - set(wanted):
                    if key in self._joined:
                        await self._send("PART", self._wanted[key].name, "leaving")
            self._wanted = wanted

    @staticmethod
    def _new_bucket(s: IrcSettings) -> TokenBucket:
        return TokenBucket(s.egress_lines, s.egress_period, s.egress_burst)

    # -- connection loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            s = self.settings
            auth_failed = False
            try:
                await self._session(s)
                reason = "connection closed by the server"
            except SaslFailedError as exc:
                reason = str(exc)
                auth_failed = True
            except asyncio.CancelledError:
                await self._close()
                raise
            except (OSError, TimeoutError, EeveeError, ValueError) as exc:
                reason = str(exc) or type(exc).__name__
            except Exception as exc:  # a bug: log it, keep the connector alive
                self.op.log.exception("irc connection crashed", error=repr(exc))
                reason = f"internal error: {exc!r}"
            registered_for = (
                time.monotonic() - self._registered_at if self._registered_at is not None else None
            )
            await self._close()
            if self._stopping:
                return
            await self._report_disconnected(reason)
            if registered_for is not None and registered_for >= 10 * s.reconnect_min:
                attempt = 0
            if auth_failed:
                # Wrong credentials do not fix themselves: retry slowly (8x reconnect_min and
                # up), so a bad password never hammers the server (which may ban the host).
                attempt = max(attempt, 3)
            delay = backoff_delay(attempt, s.reconnect_min, s.reconnect_max, self._rnd.random)
            attempt += 1
            self.op.log.warning(
                "irc disconnected: reconnecting",
                network=self.network,
                reason=reason,
                delay=round(delay, 2),
                attempt=attempt,
            )
            await asyncio.sleep(delay)

    async def _close(self) -> None:
        writer = self._writer
        self._writer = None
        self._registered.clear()
        if self._reclaim_task is not None:
            self._reclaim_task.cancel()
            self._reclaim_task = None
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(IrcConnectorError("disconnected"))
        self._waiters.clear()
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _report_disconnected(self, reason: str) -> None:
        was = self._registered_at is not None
        reported = self._disconnect_reported
        self._reset_session()
        if was and not reported:
            await self._event(ChatEventType.DISCONNECTED, user=self._bot_user(), text=reason)

    def _tls_context(self, s: IrcSettings) -> ssl.SSLContext | None:
        if not s.tls:
            return None
        ctx = ssl.create_default_context(cafile=s.ca_file)
        if not s.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if s.client_cert:
            ctx.load_cert_chain(s.client_cert, s.client_key)
        return ctx

    async def _session(self, s: IrcSettings) -> None:
        """One connection, from TCP connect to EOF; raises on failure."""
        self._reset_session()
        ctx = self._tls_context(s)
        self.op.log.info("irc connecting", host=s.host, port=s.port, tls=s.tls)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                s.host, s.port, ssl=ctx, server_hostname=s.host if ctx else None, limit=1 << 16
            ),
            s.connect_timeout,
        )
        self._writer = writer
        await self._send("CAP", "LS", "302")
        if s.password:
            await self._send("PASS", s.password)
        self._nick = self._want_nick
        await self._send("NICK", self._nick)
        await self._send("USER", s.username or s.nick, "0", "*", s.realname)
        deadline = time.monotonic() + 4 * s.connect_timeout
        pinged = False
        while True:
            timeout = s.ping_timeout if pinged else s.ping_interval
            if not self._registered.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise IrcConnectorError("registration timed out")
                timeout = min(timeout, left)
            try:
                # asyncio.timeout, not wait_for: no task per line on the hot path.
                async with asyncio.timeout(timeout):
                    data = await reader.readline()
            except TimeoutError:
                if pinged:
                    raise IrcConnectorError(
                        f"ping timeout ({s.ping_interval + s.ping_timeout:g} s without data)"
                    ) from None
                if self._registered.is_set():
                    pinged = True
                    await self._send("PING", "eevee")
                continue
            except ValueError:  # a line over the stream limit: skipped by readline
                self.op.log.warning("irc line too long: skipped")
                continue
            if not data:
                return
            pinged = False
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = data.decode("latin-1")
            line = parse_line(text)
            if line is None:
                continue
            try:
                await self._handle(line)
            except (SaslFailedError, asyncio.CancelledError):
                raise
            except Exception as exc:
                self.op.log.exception("irc handler failed", command=line.command, error=repr(exc))

    # -- sending -----------------------------------------------------------------------------

    async def _send(self, command: str, *params: str) -> bool:
        """Write one line now (bypassing flood control); False when not connected."""
        writer = self._writer
        if writer is None or writer.is_closing():
            return False
        data = format_line(command, *params).encode("utf-8")
        if len(data) > 510:
            cut = 510
            while data[cut] & 0xC0 == 0x80:
                cut -= 1
            data = data[:cut]
        writer.write(data + b"\r\n")
        try:
            if writer.transport.get_write_buffer_size() > DRAIN_ABOVE:
                async with asyncio.timeout(SEND_TIMEOUT):
                    await writer.drain()
        except (OSError, TimeoutError) as exc:
            self.op.log.warning("irc write failed: closing", error=str(exc) or repr(exc))
            writer.close()
            return False
        return True

    def enqueue(
        self, command: str, target: str, text: str, done: asyncio.Future[None] | None = None
    ) -> None:
        """Queue one line for ``target`` behind flood control (never dropped silently);
        ``done`` is set once it is written (or dropped)."""
        if len(self._queue) >= MAX_QUEUED_LINES:
            dropped = self._queue.drop_oldest()
            self.op.log.warning(
                "irc egress queue full: dropped the oldest line",
                target=dropped[0] if dropped else None,
                limit=MAX_QUEUED_LINES,
            )
            if dropped is not None:
                _settle(dropped[1][2])
        self._queue.put(target, (command, text, done))
        self._queued.set()

    async def _egress(self) -> None:
        while True:
            await self._queued.wait()
            await self._registered.wait()
            delay = self._bucket.delay()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            item = self._queue.get()
            if item is None:
                self._queued.clear()
                continue
            target, (command, text, done) = item
            self._bucket.try_take()
            if not await self._send(command, target, text):
                self._queue.put_front(target, (command, text, done))
                await asyncio.sleep(0.05)
            else:
                _settle(done)

    # -- bus publishing ----------------------------------------------------------------------

    def _bot_user(self) -> ChatUser:
        nick = self._nick or self._want_nick
        return ChatUser(id=nick, name=nick, host=self._user_host, account=self._account)

    def _user(self, nick: str, host: str | None, account: str | None = None) -> ChatUser:
        account = account or self._accounts.get(self._lower(nick))
        return ChatUser(id=nick, name=nick, host=host, account=account)

    async def _event(
        self,
        event: ChatEventType,
        *,
        room: str | None = None,
        user: ChatUser | None = None,
        target: ChatUser | None = None,
        text: str | None = None,
    ) -> None:
        body = ChatEvent(
            platform=PLATFORM,
            network=self.network,
            event=event,
            room=room,
            user=user,
            target=target,
            text=text,
        )
        try:
            await self.op.ipc.publish(
                self.op.subjects.chat_event(PLATFORM, self.network, event.value), body
            )
        except EeveeError as exc:
            self.op.log.warning("cannot publish chat event", chat_event=event.value, error=str(exc))

    # -- inbound -----------------------------------------------------------------------------

    async def _handle(self, line: IrcLine) -> None:
        for matcher, fut in list(self._waiters):
            if fut.done():
                continue
            try:
                result = matcher(line)
            except Exception as exc:
                fut.set_exception(exc)
                continue
            if result is not None:
                fut.set_result(result)
        self._waiters = [w for w in self._waiters if not w[1].done()]
        handler = getattr(self, f"_on_{line.command.lower()}", None)
        if handler is not None:
            await handler(line)

    async def _on_ping(self, line: IrcLine) -> None:
        await self._send("PONG", *(line.params[-1:] or ["eevee"]))

    async def _on_error(self, line: IrcLine) -> None:
        self.op.log.warning("irc server error", message=line.param(-1))

    # registration, capabilities and SASL

    async def _on_cap(self, line: IrcLine) -> None:
        sub = line.param(1).upper()
        if sub == "LS":
            multiline = len(line.params) > 3 and line.params[2] == "*"
            for item in line.param(-1).split():
                name, _, value = item.partition("=")
                self._ls_caps[name] = value
            if not multiline and not self._cap_done:
                await self._request_caps()
        elif sub == "ACK":
            acked = {c.lstrip("-~=") for c in line.param(-1).split()}
            self._caps |= acked
            if "sasl" in acked and self.settings.sasl and self._sasl_state == "none":
                self._sasl_state = "running"
                await self._send("AUTHENTICATE", self.settings.sasl)
            elif self._sasl_state != "running":
                await self._cap_end()
        elif sub == "NAK":
            nakked = set(line.param(-1).split())
            if self.settings.sasl and "sasl" in nakked and len(nakked) > 1:
                await self._send("CAP", "REQ", "sasl")  # retry SASL alone
            elif self.settings.sasl:
                await self._sasl_failed("the server refused the sasl capability")
            else:
                await self._cap_end()

    async def _request_caps(self) -> None:
        s = self.settings
        want = set(WANTED_CAPS & self._ls_caps.keys())
        if s.sasl:
            if "sasl" not in self._ls_caps:
                await self._sasl_failed("the server does not offer SASL")
            mechs = self._ls_caps["sasl"]
            if mechs and s.sasl not in mechs.upper().split(","):
                await self._sasl_failed(f"the server offers {mechs}, not {s.sasl}")
            want.add("sasl")
        if want:
            await self._send("CAP", "REQ", " ".join(sorted(want)))
        else:
            await self._cap_end()

    async def _cap_end(self) -> None:
        if not self._cap_done:
            self._cap_done = True
            await self._send("CAP", "END")

    async def _on_authenticate(self, line: IrcLine) -> None:
        s = self.settings
        if line.param(0) != "+" or self._sasl_state != "running":
            return
        if s.sasl == "EXTERNAL":
            await self._send("AUTHENTICATE", "+")
            return
        raw = f"\0{s.sasl_username}\0{s.sasl_password}".encode()
        payload = base64.b64encode(raw).decode("ascii")
        for i in range(0, len(payload), 400):
            await self._send("AUTHENTICATE", payload[i : i + 400])
        if len(payload) % 400 == 0:
            await self._send("AUTHENTICATE", "+")

    async def _on_900(self, line: IrcLine) -> None:
        self._account = line.param(2) or None
        self.op.log.info("irc logged in", account=self._account)

    async def _on_903(self, line: IrcLine) -> None:
        self._sasl_state = "ok"
        await self._cap_end()

    async def _on_904(self, line: IrcLine) -> None:
        await self._sasl_failed(f"server replied {line.command} {line.param(-1)}".strip())

    _on_902 = _on_904
    _on_905 = _on_904
    _on_906 = _on_904

    async def _on_908(self, line: IrcLine) -> None:
        self.op.log.info("irc server SASL mechanisms", mechanisms=line.param(1))

    async def _sasl_failed(self, why: str) -> None:
        """Report a SASL failure once, end this connection; the caller never loops."""
        self._sasl_state = "failed"
        text = f"SASL authentication failed: {why}"
        self.op.log.error(
            "SASL authentication failed",
            network=self.network,
            mechanism=self.settings.sasl,
            reason=why,
        )
        self._disconnect_reported = True
        await self._event(ChatEventType.DISCONNECTED, user=self._bot_user(), text=text)
        await self._send("QUIT", "SASL authentication failed")
        raise SaslFailedError(text)

    async def _on_001(self, line: IrcLine) -> None:
        s = self.settings
        if s.sasl and self._sasl_state != "ok":
            await self._sasl_failed("the server completed registration without SASL")
        self._nick = line.param(0) or self._nick
        self._server = line.source or ""
        self._registered_at = time.monotonic()
        self._registered.set()
        if self._reclaim_task is None:
            self._reclaim_task = asyncio.create_task(self._reclaim_loop(), name="irc-reclaim")
        self.op.log.info("irc connected", network=self.network, nick=self._nick)
        await self._event(ChatEventType.CONNECTED, user=self._bot_user(), text=self._server)
        await self._join_wanted()

    async def _join_wanted(self) -> None:
        chans = sorted(self._wanted.values(), key=lambda c: c.key is None)
        batch: list[Channel] = []
        for chan in [*chans, None]:
            names = ",".join(c.name for c in batch)
            if batch and (chan is None or len(names) + len(chan.name) > 300):
                keys = ",".join(c.key or "x" for c in batch if c.key)
                await self._send("JOIN", names, *([keys] if keys else []))
                batch = []
            if chan is not None:
                batch.append(chan)

    async def _on_005(self, line: IrcLine) -> None:
        for token in line.params[1:-1]:
            key, _, value = token.partition("=")
            if key.startswith("-"):
                self._isupport.pop(key[1:], None)
            else:
                self._isupport[key] = value

    async def _on_396(self, line: IrcLine) -> None:
        host = line.param(1)
        if host and self._user_host:
            self._user_host = self._user_host.partition("@")[0] + "@" + host

    async def _nick_error(self, line: IrcLine) -> None:
        if self._registered.is_set():
            self.op.log.debug("irc nick refused", nick=line.param(1), reason=line.param(-1))
            return
        s = self.settings
        self._nick_tries += 1
        candidates = [self._want_nick, *s.alt_nicks]
        if self._nick_tries < len(candidates):
            nick = candidates[self._nick_tries]
        else:
            extra = self._nick_tries - len(candidates) + 1
            nick = self._want_nick + "_" * extra if extra <= 4 else f"{self._want_nick[:7]}{extra}"
        self._nick = nick
        await self._send("NICK", nick)

    _on_431 = _nick_error
    _on_432 = _nick_error
    _on_433 = _nick_error
    _on_436 = _nick_error

    async def _on_437(self, line: IrcLine) -> None:
        if not self._is_channel(line.param(1)):
            await self._nick_error(line)

    async def _reclaim_loop(self) -> None:
        """Every ``reclaim_nick_interval`` seconds, try to take the main nick back."""
        while True:
            await asyncio.sleep(self.settings.reclaim_nick_interval)
            await self._reclaim_now()

    async def _reclaim_now(self) -> None:
        if self._registered.is_set() and not self._same(self._nick, self._want_nick):
            self.op.log.debug("irc reclaiming nick", nick=self._want_nick)
            await self._send("NICK", self._want_nick)

    # channel and user events

    async def _on_join(self, line: IrcLine) -> None:
        nick, host = split_source(line.source)
        chan = line.param(0)
        account: str | None = None
        if "extended-join" in self._caps and len(line.params) >= 2:
            account = None if line.params[1] == "*" else line.params[1]
            self._set_account(nick, line.params[1])
        elif "account" in line.tags:
            account = line.tags["account"]
            self._set_account(nick, account)
        if self._same(nick, self._nick):
            self._user_host = host or self._user_host
            self._joined[self._lower(chan)] = chan
            if "WHOX" in self._isupport:
                await self._send("WHO", chan, f"%tuhnfa,{_WHOX_TOKEN}")
        await self._event(
            ChatEventType.JOIN, room=chan, user=self._user(nick, host, account), text=None
        )

    async def _on_354(self, line: IrcLine) -> None:
        if line.param(1) == _WHOX_TOKEN and len(line.params) >= 7:
            self._set_account(line.params[4], line.params[6])

    async def _on_account(self, line: IrcLine) -> None:
        nick, _ = split_source(line.source)
        self._set_account(nick, line.param(0))

    def _set_account(self, nick: str, account: str) -> None:
        key = self._lower(nick)
        if account in ("*", "0", ""):
            self._accounts.pop(key, None)
        else:
            self._accounts[key] = account

    async def _on_part(self, line: IrcLine) -> None:
        nick, host = split_source(line.source)
        chan = line.param(0)
        if self._same(nick, self._nick):
            self._joined.pop(self._lower(chan), None)
        reason = line.params[1] if len(line.params) > 1 else None
        await self._event(ChatEventType.PART, room=chan, user=self._user(nick, host), text=reason)

    async def _on_kick(self, line: IrcLine) -> None:
        nick, host = split_source(line.source)
        chan, victim = line.param(0), line.param(1)
        if self._same(victim, self._nick):
            self._joined.pop(self._lower(chan), None)
        reason = line.params[2] if len(line.params) > 2 else None
        await self._event(
            ChatEventType.KICK,
            room=chan,
            user=self._user(nick, host),
            target=self._user(victim, None),
            text=reason,
        )

    async def _on_quit(self, line: IrcLine) -> None:
        nick, host = split_source(line.source)
        user = self._user(nick, host)
        self._accounts.pop(self._lower(nick), None)
        await self._event(ChatEventType.QUIT, user=user, text=line.param(0) or None)
        if self._same(nick, self._want_nick):
            await self._reclaim_now()

    async def _on_nick(self, line: IrcLine) -> None:
        old, host = split_source(line.source)
        new = line.param(0)
        if self._same(old, self._nick):
            self._nick = new
            self.op.log.info("irc nick changed", nick=new)
        key = self._lower(old)
        if key in self._accounts:
            self._accounts[self._lower(new)] = self._accounts.pop(key)
        await self._event(ChatEventType.NICK, user=self._user(old, host), text=new)
        if self._same(old, self._want_nick):
            await self._reclaim_now()

    async def _on_topic(self, line: IrcLine) -> None:
        nick, host = split_source(line.source)
        await self._event(
            ChatEventType.TOPIC, room=line.param(0), user=self._user(nick, host), text=line.param(1)
        )

    async def _on_invite(self, line: IrcLine) -> None:
        nick, host = split_source(line.source)
        invitee = line.param(0)
        await self._event(
            ChatEventType.INVITE,
            room=line.param(1),
            user=self._user(nick, host),
            target=self._user(invitee, None),
        )

    async def _on_chghost(self, line: IrcLine) -> None:
        nick, _ = split_source(line.source)
        if self._same(nick, self._nick) and len(line.params) >= 2:
            self._user_host = f"{line.params[0]}@{line.params[1]}"

    # messages

    async def _on_privmsg(self, line: IrcLine) -> None:
        await self._message(line, notice=False)

    async def _on_notice(self, line: IrcLine) -> None:
        await self._message(line, notice=True)

    async def _message(self, line: IrcLine, *, notice: bool) -> None:
        if len(line.params) < 2:
            return
        nick, host = split_source(line.source)
        target, raw = line.params[0], line.params[-1]
        if not self._registered.is_set() or not nick or (host is None and "." in nick):
            self.op.log.debug("irc server notice", source=line.source, text=raw)
            return
        if self._same(nick, self._nick):
            return  # our own line echoed back (echo-message, bouncers)
        room_name = target
        statusmsg = self._isupport.get("STATUSMSG", "")
        while room_name and room_name[0] in statusmsg and len(room_name) > 1:
            room_name = room_name[1:]
        is_chan = self._is_channel(room_name)
        style = MessageStyle.NOTICE if notice else MessageStyle.MESSAGE
        body = raw
        if raw.startswith("\x01"):
            action = parse_ctcp_action(raw)
            if action is None:
                if not notice:
                    await self._ctcp_query(nick, raw)
                return
            style, body = MessageStyle.ACTION, action
        account = line.tags.get("account")
        if account:
            self._set_account(nick, account)
        msg = ChatMessage(
            platform=PLATFORM,
            network=self.network,
            room=room_name if is_chan else nick,
            user=self._user(nick, host, account),
            text=strip_formatting(body),
            raw=raw,
            style=style,
            private=not is_chan,
            mentioned=mentions(body, self._nick),
            message_id=line.tags.get("msgid"),
        )
        try:
            # Stored before the next line is read: once the stream has it, it is answered
            # even if the router, a command operator or the bus dies.
            await self.op.ipc.publish_stored(
                self.op.subjects.chat_in(PLATFORM, self.network, msg.room), msg
            )
        except EeveeError as exc:
            self.op.log.warning("cannot publish chat message", room=msg.room, error=str(exc))

    async def _ctcp_query(self, nick: str, raw: str) -> None:
        word, _, arg = raw.strip("\x01").partition(" ")
        word = word.upper()
        answers = {
            "VERSION": VERSION,
            "PING": arg,
            "TIME": time.strftime("%a %b %d %H:%M:%S %Y"),
            "CLIENTINFO": "ACTION CLIENTINFO PING TIME VERSION",
        }
        if word in answers:
            answer = f"{word} {answers[word]}".rstrip()
            self.enqueue("NOTICE", nick, f"\x01{sanitize(answer).replace(chr(1), '')}\x01")

    # -- outbound ----------------------------------------------------------------------------

    async def _out(self, env: Envelope[OutgoingMessage]) -> None:
        """Queue an outgoing message: markdown -> IRC, split to fit, flood-controlled; return
        once its last line was written (the :class:`Outbox` then acknowledges it).

        The target must be one channel or one nick (else the message is dead-lettered); the
        text cannot carry CTCP or other control characters (:func:`outgoing_lines`).
        """
        out = env.body
        target = out.target
        problem = target_problem(
            target,
            self._chantypes(),
            self._isupport_int("CHANNELLEN", MAX_CHANNEL_BYTES),
            self._isupport_int("NICKLEN", MAX_NICK_BYTES),
        )
        if problem is not None:
            await self._refuse_out(env, problem)
            return
        command = "NOTICE" if out.style is MessageStyle.NOTICE else "PRIVMSG"
        action = out.style is MessageStyle.ACTION
        nicklen = self._isupport_int("NICKLEN", 0)
        nick = self._nick or self._want_nick
        nick = nick + "x" * max(0, min(nicklen, 64) - len(nick))
        extra = ACTION_OVERHEAD if action else 0
        budget = text_budget(command, target, nick, self._user_host, extra=extra)
        pieces = outgoing_lines(out.text, budget, action=action)
        if not pieces:
            self.op.log.debug("irc: nothing to send (empty text)", target=target)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for n, piece in enumerate(pieces, 1):
            self.enqueue(command, target, piece, done if n == len(pieces) else None)
        await done

    async def _refuse_out(self, env: Envelope[OutgoingMessage], problem: str) -> None:
        """Log a ``chat.out`` that must not be sent and dead-letter it for its sender to see."""
        out = env.body
        subject = self.op.subjects.chat_out(PLATFORM, self.network)
        reason = f"invalid IRC target: {problem}"
        self.op.log.warning(
            "irc: refusing to send to an invalid target", target=out.target, reason=problem
        )
        payload = dump_model(env)
        try:
            letter = dead_letter(subject, reason, self.op.id, payload)
            await self.op.ipc.publish(self.op.subjects.dlq(subject), letter)
        except EeveeError as exc:
            self.op.log.error("could not publish dead letter", subject=subject, error=str(exc))

    # -- control -----------------------------------------------------------------------------

    def _expect(self, matcher: _Matcher) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append((matcher, fut))
        return fut

    async def on_ctl(self, req: ConnectorControl) -> ConnectorControlResult:
        """Serve a join / part / nick / names request."""
        try:
            return await self._ctl(req)
        except (TimeoutError, IrcConnectorError) as exc:
            why = "no answer from the server" if isinstance(exc, TimeoutError) else str(exc)
            return ConnectorControlResult(ok=False, message=f"{req.action}: {why}")

    async def _ctl(self, req: ConnectorControl) -> ConnectorControlResult:
        if req.action == "nick":
            return await self._ctl_nick(req.nick)
        room = req.room or ""
        problem = self._channel_problem(room) if room else "a room is needed"
        if problem is None and req.key is not None:
            problem = key_problem(req.key)
        if problem is not None:
            self.op.log.warning(
                "irc: refusing a control request", action=req.action, reason=problem
            )
            return ConnectorControlResult(ok=False, message=f"{req.action}: {problem}")
        if not self.connected:
            return ConnectorControlResult(ok=False, message=f"not connected to {self.network}")
        key = self._lower(room)
        if req.action == "join":
            if key in self._joined:
                self._wanted[key] = Channel(name=room, key=req.key)
                return ConnectorControlResult(ok=True, message=f"already in {room}")
            fut = self._expect(
                lambda ln: (
                    True
                    if ln.command == "JOIN"
                    and self._same(ln.nick, self._nick)
                    and self._same(ln.param(0), room)
                    else (ln.param(-1) or ln.command)
                    if ln.command in _JOIN_ERRORS and self._same(ln.param(1), room)
                    else None
                )
            )
            await self._send("JOIN", room, *([req.key] if req.key else []))
            result = await asyncio.wait_for(fut, CTL_TIMEOUT)
            if result is True:
                self._wanted[key] = Channel(name=room, key=req.key)
                return ConnectorControlResult(ok=True, message=f"joined {room}")
            return ConnectorControlResult(ok=False, message=f"cannot join {room}: {result}")
        if req.action == "part":
            self._wanted.pop(key, None)
            if key not in self._joined:
                return ConnectorControlResult(ok=True, message=f"not in {room}")
            fut = self._expect(
                lambda ln: (
                    True
                    if ln.command in ("PART", "KICK")
                    and self._same(ln.param(0), room)
                    and self._same(ln.nick if ln.command == "PART" else ln.param(1), self._nick)
                    else (ln.param(-1) or ln.command)
                    if ln.command in ("403", "442") and self._same(ln.param(1), room)
                    else None
                )
            )
            await self._send("PART", room, *([defuse(req.reason)] if req.reason else []))
            result = await asyncio.wait_for(fut, CTL_TIMEOUT)
            if result is True:
                return ConnectorControlResult(ok=True, message=f"left {room}")
            return ConnectorControlResult(ok=False, message=f"cannot part {room}: {result}")
        # names
        users: list[str] = []
        prefixes = self._prefix_chars()

        def names(ln: IrcLine) -> Any:
            if ln.command == "353" and self._same(ln.param(-2), room):
                users.extend(n.lstrip(prefixes).partition("!")[0] for n in ln.param(-1).split())
            elif ln.command == "366" and self._same(ln.param(1), room):
                return True
            elif ln.command in ("403", "401") and self._same(ln.param(1), room):
                return ln.param(-1) or ln.command
            return None

        fut = self._expect(names)
        await self._send("NAMES", room)
        result = await asyncio.wait_for(fut, CTL_TIMEOUT)
        if result is not True:
            return ConnectorControlResult(ok=False, message=f"names {room}: {result}")
        return ConnectorControlResult(ok=True, message=f"{len(users)} users", users=users)

    async def _ctl_nick(self, nick: str | None) -> ConnectorControlResult:
        nick = nick or ""
        problem = nick_problem(
            nick, self._chantypes(), self._isupport_int("NICKLEN", MAX_NICK_BYTES)
        )
        if problem is not None:
            return ConnectorControlResult(ok=False, message=f"nick: {problem}")
        if not self.connected:
            return ConnectorControlResult(ok=False, message=f"not connected to {self.network}")
        if self._same(self._nick, nick) and self._nick == nick:
            self._want_nick = nick
            return ConnectorControlResult(ok=True, message=f"already {nick}")
        old = self._nick
        fut = self._expect(
            lambda ln: (
                True
                if ln.command == "NICK" and self._same(ln.nick, old)
                else (ln.param(-1) or ln.command)
                if ln.command in _NICK_ERRORS
                else None
            )
        )
        await self._send("NICK", nick)
        result = await asyncio.wait_for(fut, CTL_TIMEOUT)
        if result is True:
            self._want_nick = nick
            return ConnectorControlResult(ok=True, message=f"now {nick}")
        return ConnectorControlResult(ok=False, message=f"cannot take {nick}: {result}")


def create() -> Operator[IrcSettings]:
    """Build the IRC operator (nothing runs until ``run()`` or ``serve()``)."""
    op = Operator(IrcSettings, name="irc")
    connector = IrcConnector(op)
    op.on_start(connector.start)
    op.on_reload(connector.reload)
    op.on_stop(connector.stop)
    return op


def main() -> None:
    """Run the IRC operator as a process."""
    create().run()


if __name__ == "__main__":
    main()
