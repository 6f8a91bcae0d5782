"""One connection to the IRC server, driven through the sans-I/O client.

:class:`IrcSession` opens a :class:`~operators.irc.connection.Connection`, feeds the lines it
reads to :class:`~operators.irc.protocol.IrcProtocol`, writes the lines the client queues,
and turns its events into bus traffic (:mod:`~operators.irc.translate`, through
:class:`~operators.irc.link.BusLink`): chat messages and events, ``connected`` and
``disconnected`` (reported once per connection), CTCP answers through flood control. It PINGs
a silent server and gives up on one that stays silent; it tries to take the wanted nick back
every ``reclaim_nick_interval`` seconds. Reconnecting is the connector's business.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from eeveepy import Operator
from eeveepy.errors import IrcConnectionError, SaslFailedError
from eeveepy.protocol.models import ChatEventType
from operators.irc.connection import Connection
from operators.irc.control import Expect
from operators.irc.egress import Outbound
from operators.irc.events import (
    CtcpQuery,
    Event,
    LoggedIn,
    Message,
    NickRefused,
    OwnNickChanged,
    Registered,
    SaslFailed,
    SaslMechanisms,
    ServerError,
    ServerNotice,
)
from operators.irc.lines import IrcLine, format_line, parse_line
from operators.irc.link import BusLink
from operators.irc.protocol import IrcProtocol
from operators.irc.settings import Channel, IrcSettings
from operators.irc.state import ServerState
from operators.irc.translate import chat_event, chat_message, connection_event, ctcp_reply

__all__ = ["IrcSession"]


class IrcSession:
    """The connection of one connector, one at a time.

    ``queue`` puts a line behind flood control; ``wanted`` gives the channels to join once
    registered.
    """

    def __init__(
        self,
        op: Operator[Any],
        proto: IrcProtocol,
        link: BusLink,
        queue: Callable[[Outbound], None],
        wanted: Callable[[], Iterable[Channel]],
    ) -> None:
        self._op = op
        self.proto = proto
        self._link = link
        self._queue = queue
        self._wanted = wanted
        self.registered = asyncio.Event()
        """Set while registered with the server: lines may be sent."""
        self.expect = Expect()
        self.registered_at: float | None = None
        """When this connection was registered (monotonic), if it was."""
        self._conn: Connection | None = None
        self._reclaim_task: asyncio.Task[None] | None = None
        self._disconnect_reported = False

    @property
    def state(self) -> ServerState:
        """What the client knows about the server and itself."""
        return self.proto.state

    @property
    def connected(self) -> bool:
        """Registered with the server (001 received) and not disconnected since."""
        return self.registered.is_set() and self._conn is not None

    def reset(self) -> None:
        """Forget the last connection."""
        self.proto.reset()
        self.registered.clear()
        self.registered_at = None
        self._disconnect_reported = False

    async def run(self, s: IrcSettings) -> None:
        """One connection, from TCP connect to EOF; raises on failure (the caller closes)."""
        self.reset()
        self._op.log.info("irc connecting", host=s.host, port=s.port, tls=s.tls)
        conn = self._conn = await Connection.open(s, lambda: self._op.log)
        self.proto.connect()
        await self._flush()
        deadline = time.monotonic() + 4 * s.connect_timeout
        pinged = False
        while True:
            timeout = s.ping_timeout if pinged else s.ping_interval
            if not self.registered.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise IrcConnectionError("registration timed out")
                timeout = min(timeout, left)
            try:
                text = await conn.read_line(timeout)
            except TimeoutError:
                if pinged:
                    raise IrcConnectionError(
                        f"ping timeout ({s.ping_interval + s.ping_timeout:g} s without data)"
                    ) from None
                if self.registered.is_set():
                    pinged = True
                    await self.send("PING", "eevee")
                continue
            if text is None:
                return
            if not text:
                continue  # a line too long to read (logged)
            pinged = False
            line = parse_line(text)
            if line is None:
                continue
            try:
                await self._handle(line)
            except (SaslFailedError, asyncio.CancelledError):
                raise
            except Exception as exc:  # a bug in a handler must not end the connection
                self._op.log.exception("irc handler failed", command=line.command, error=repr(exc))

    async def close(self) -> None:
        """Close the connection; waiting control requests fail."""
        conn, self._conn = self._conn, None
        self.registered.clear()
        if self._reclaim_task is not None:
            self._reclaim_task.cancel()
            self._reclaim_task = None
        self.expect.fail_all(IrcConnectionError("disconnected"))
        if conn is not None:
            await conn.close()

    async def report_disconnected(self, reason: str) -> None:
        """Publish ``disconnected`` if this connection was registered and it was not said yet;
        forget the connection."""
        was = self.registered_at is not None
        reported = self._disconnect_reported
        self.reset()
        if was and not reported:
            await self._connection_event(ChatEventType.DISCONNECTED, reason)

    async def _connection_event(self, kind: ChatEventType, text: str) -> None:
        me = self.state.me()
        await self._link.event(connection_event(kind, me, self._link.network, text))

    async def _reclaim_loop(self) -> None:
        """Every ``reclaim_nick_interval`` seconds, try to take the main nick back."""
        while True:
            await asyncio.sleep(self.proto.settings.reclaim_nick_interval)
            if self.proto.reclaim():
                self._op.log.debug("irc reclaiming nick", nick=self.state.want_nick)
                await self._flush()

    # -- writing -----------------------------------------------------------------------------

    async def send(self, command: str, *params: str) -> bool:
        """Write one line now (bypassing flood control); False when not connected."""
        conn = self._conn
        return conn is not None and await conn.write(format_line(command, *params))

    async def write(self, line: Outbound) -> bool:
        """Write one queued line now; False when not connected (it is tried again)."""
        conn = self._conn  # put and drain apart: no second coroutine per line when not needed
        if conn is None or not conn.put(format_line(*line)):
            return False
        return await conn.drain() if conn.backlogged else True

    async def _flush(self) -> None:
        for text in self.proto.data_to_send():
            conn = self._conn
            if conn is not None:
                await conn.write(text)

    # -- reading -----------------------------------------------------------------------------

    async def _handle(self, line: IrcLine) -> None:
        self.expect.feed(line)
        events = self.proto.feed(line)
        if self.proto.pending:
            await self._flush()
        for event in events:
            if type(event) is Message:  # the hot path: one less coroutine per chat line
                network = self._link.network
                await self._link.message(chat_message(event, network, self.state.nick))
            else:
                await self._on_event(event)

    async def _on_event(self, event: Event) -> None:
        log = self._op.log
        match event:
            case Message():
                await self._link.message(chat_message(event, self._link.network, self.state.nick))
            case Registered():
                await self._on_registered(event)
            case SaslFailed():
                await self._on_sasl_failed(event)
            case CtcpQuery():
                reply = ctcp_reply(event)
                if reply is not None:
                    self._queue(reply)
            case LoggedIn():
                log.info("irc logged in", account=event.account)
            case SaslMechanisms():
                log.info("irc server SASL mechanisms", mechanisms=event.mechanisms)
            case OwnNickChanged():
                log.info("irc nick changed", nick=event.nick)
            case NickRefused():
                log.debug("irc nick refused", nick=event.nick, reason=event.reason)
            case ServerError():
                log.warning("irc server error", message=event.message)
            case ServerNotice():
                log.debug("irc server notice", source=event.source, text=event.text)
            case _:
                await self._link.event(chat_event(event, self._link.network))

    async def _on_registered(self, event: Registered) -> None:
        self.registered_at = time.monotonic()
        self.registered.set()
        if self._reclaim_task is None:
            self._reclaim_task = asyncio.create_task(self._reclaim_loop(), name="irc-reclaim")
        self._op.log.info("irc connected", network=self._link.network, nick=event.nick)
        await self._connection_event(ChatEventType.CONNECTED, event.server)
        self.proto.join(self._wanted())
        await self._flush()

    async def _on_sasl_failed(self, event: SaslFailed) -> None:
        """Report a SASL failure once and end this connection (its QUIT is written)."""
        text = f"SASL authentication failed: {event.reason}"
        self._op.log.error(
            "SASL authentication failed",
            network=self._link.network,
            mechanism=self.proto.settings.sasl,
            reason=event.reason,
        )
        self._disconnect_reported = True
        await self._connection_event(ChatEventType.DISCONNECTED, text)
        raise SaslFailedError(text)
