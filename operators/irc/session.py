"""One connection to the IRC server, driven through the sans-I/O client.

:class:`IrcSession` opens a :class:`~operators.irc.connection.Connection`, feeds the lines it
reads to :class:`~operators.irc.protocol.IrcProtocol`, writes the lines the client queues,
and hands its events to the connector kit's :class:`~eeveepy.connector.link.Link`
(:mod:`~operators.irc.translate` makes envelopes of them): chat messages and events, the
session ``connected`` once registered, CTCP answers behind flood control. It PINGs a silent
server and gives up on one that stays silent; it tries to take the wanted nick back every
``reclaim_nick_interval`` seconds. Reconnecting, rejoining and the ``disconnected`` event are
the kit's business.
"""

from __future__ import annotations

import asyncio
import time

from eeveepy.connector import ConnectionState, Expect, Link, Outbound
from eeveepy.errors import IrcConnectionError, SaslFailedError
from operators.irc.connection import Connection
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
from operators.irc.protocol import IrcProtocol
from operators.irc.settings import IrcSettings
from operators.irc.state import ServerState
from operators.irc.translate import chat_event, chat_message, chat_user, ctcp_reply

__all__ = ["IrcSession"]


class IrcSession:
    """One connection of the connector; ``expect`` answers control requests from its lines."""

    def __init__(self, proto: IrcProtocol, link: Link, expect: Expect[IrcLine]) -> None:
        self.proto = proto
        self._link = link
        self._expect = expect
        self._conn: Connection | None = None
        self._reclaim_task: asyncio.Task[None] | None = None

    @property
    def state(self) -> ServerState:
        """What the client knows about the server and itself."""
        return self.proto.state

    async def run(self, s: IrcSettings) -> None:
        """One connection, from TCP connect to EOF (return); raises on failure, closes always."""
        try:
            await self._run(s)
        finally:
            await self.close()

    async def _run(self, s: IrcSettings) -> None:
        self._link.log.info("irc connecting", host=s.host, port=s.port, tls=s.tls)
        conn = self._conn = await Connection.open(s, lambda: self._link.log)
        self.proto.connect()
        await self.flush()
        deadline = time.monotonic() + 4 * s.connect_timeout
        pinged = False
        while True:
            timeout = s.ping_timeout if pinged else s.ping_interval
            if not self.state.registered:
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
                if self.state.registered:
                    pinged = True
                    await self.write("PING", "eevee")
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
            except SaslFailedError:
                raise
            except Exception as exc:  # a bug in a handler must not end the connection
                self._link.log.exception(
                    "irc handler failed", command=line.command, error=repr(exc)
                )

    async def close(self) -> None:
        """Close the connection; waiting control requests fail."""
        conn, self._conn = self._conn, None
        if self._reclaim_task is not None:
            self._reclaim_task.cancel()
            self._reclaim_task = None
        self._expect.fail(IrcConnectionError("disconnected"))
        if conn is not None:
            await conn.close()

    async def _reclaim_loop(self) -> None:
        """Every ``reclaim_nick_interval`` seconds (read live), try to take the main nick back."""
        while True:
            await asyncio.sleep(self._link.op.settings.reclaim_nick_interval)
            if self.proto.reclaim():
                self._link.log.debug("irc reclaiming nick", nick=self.state.want_nick)
                await self.flush()

    # -- writing -----------------------------------------------------------------------------

    async def write(self, command: str, *params: str) -> None:
        """Write one line now (bypassing flood control); raises when it cannot be written."""
        conn = self._conn
        if conn is None or not await conn.write(format_line(command, *params)):
            raise IrcConnectionError("not connected")

    async def send(self, item: Outbound) -> None:
        """Write one line from the egress pump; raises when it cannot be (tried again)."""
        conn = self._conn  # put and drain apart: no second coroutine per line when not needed
        if conn is None or not conn.put(format_line(item.kind, item.target, item.text)):
            raise IrcConnectionError("not connected")
        if conn.backlogged and not await conn.drain():
            raise IrcConnectionError("write failed")

    def send_now(self, item: Outbound) -> bool:
        """Write one line at once when the socket takes it without waiting (nothing
        backlogged); False to leave it to the egress pump (:meth:`send`)."""
        conn = self._conn
        if conn is None or conn.backlogged:
            return False
        return conn.put(format_line(item.kind, item.target, item.text))

    async def flush(self) -> None:
        """Write what the protocol client queued (registration, joins, a nick...)."""
        for text in self.proto.data_to_send():
            conn = self._conn
            if conn is not None:
                await conn.write(text)

    # -- reading -----------------------------------------------------------------------------

    async def _handle(self, line: IrcLine) -> None:
        if self._expect:
            self._expect.feed(line)
        events = self.proto.feed(line)
        if self.proto.pending:
            await self.flush()
        for event in events:
            if type(event) is Message:  # the hot path: one less coroutine per chat line
                network = self._link.network  # a line read is gone: stored behind (wait=False)
                await self._link.message(chat_message(event, network, self.state.nick), wait=False)
            else:
                await self._on_event(event)

    async def _on_event(self, event: Event) -> None:
        link, log = self._link, self._link.log
        match event:
            case Message():
                await link.message(chat_message(event, link.network, self.state.nick), wait=False)
            case Registered():
                self._on_registered(event)
            case SaslFailed():
                self._on_sasl_failed(event)
            case CtcpQuery():
                reply = ctcp_reply(event)
                if reply is not None:
                    link.put(reply)
            case LoggedIn():
                link.me = chat_user(self.state.me())
                log.info("irc logged in", account=event.account)
            case SaslMechanisms():
                log.info("irc server SASL mechanisms", mechanisms=event.mechanisms)
            case OwnNickChanged():
                link.me = chat_user(self.state.me())
                log.info("irc nick changed", nick=event.nick)
            case NickRefused():
                log.debug("irc nick refused", nick=event.nick, reason=event.reason)
            case ServerError():
                log.warning("irc server error", message=event.message)
            case ServerNotice():
                log.debug("irc server notice", source=event.source, text=event.text)
            case _:
                await link.event(chat_event(event, link.network))

    def _on_registered(self, event: Registered) -> None:
        if self._reclaim_task is None:
            self._reclaim_task = asyncio.create_task(self._reclaim_loop(), name="irc-reclaim")
        self._link.log.info("irc connected", network=self._link.network, nick=event.nick)
        self._link.me = chat_user(self.state.me())
        self._link.state(ConnectionState.CONNECTED, event.server)  # the kit joins the rooms

    def _on_sasl_failed(self, event: SaslFailed) -> None:
        """Log a SASL failure and end this connection (its QUIT is written); the kit says
        ``disconnected`` with the reason and retries slowly."""
        self._link.log.error(
            "SASL authentication failed",
            network=self._link.network,
            mechanism=self.proto.settings.sasl,
            reason=event.reason,
        )
        raise SaslFailedError(f"SASL authentication failed: {event.reason}")
