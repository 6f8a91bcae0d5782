"""The XMPP stream of one account: :class:`XmppStream`, a slixmpp client set up for a bot.

slixmpp speaks XMPP (TLS, SASL, stream management, pings); this class only chooses how:

- **TLS as the settings say**: STARTTLS required, direct TLS, or plaintext (allowed by the
  settings only to loopback or when asked for), verified with the settings' CA file.
- **Stream management (XEP-0198)** with resumption: a dropped connection resumes the same
  session, and the server replays what the bot had not acknowledged, so a short network drop
  loses nothing in either direction. Each message the bot sends (:meth:`XmppStream.
  send_chat`) is followed by an ack request and stays pending until the server acknowledges
  it: its future completes then (the connector kit acknowledges the message's stored copy only
  at that point), and on the next session, resumed or not, whatever is still pending is sent
  again (:meth:`XmppStream.resend_pending`).
- **No reconnect loop of its own**: the connector kit decides when to reconnect, so
  :meth:`XmppStream.start` makes one attempt and reports how it ended.
- **Immediate TCP acknowledgements**: servers leave Nagle's algorithm on (Prosody does), and
  a client that delays its ACKs (the Linux default) makes the server hold each small stanza
  up to ~40 ms behind the one before. The stream asks the kernel for a quick ACK after each
  read (``TCP_QUICKACK``), which takes that wait away on the bot's side of the socket.
- Every stanza and event the connector needs goes to :attr:`XmppStream.sink`, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any, Final

import slixmpp
from slixmpp import JID
from slixmpp.plugins.xep_0198.stanza import Ack, RequestAck
from slixmpp.stanza import Iq, Message
from slixmpp.types import MessageTypes as MessageType
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from eeveepy.tls import client_context
from operators.xmpp.settings import XmppSettings

__all__ = ["Event", "XmppStream", "route_library_logs", "tls_failure"]

Event = tuple[str, Any]
"""``(kind, data)``: ``message``/``presence`` (the stanza's XML element and the count of
stanzas received with it, for stream resumption), ``started``, ``resumed``, ``disconnected``,
``failed``, ``auth``, ``untrusted``, ``stream_error``."""

_QUICKACK: Final = getattr(socket, "TCP_QUICKACK", None)
VERSION: Final = "eevee XMPP connector"


class XmppStream(slixmpp.ClientXMPP):
    """One account's XMPP client, reused across connections (stream resumption needs it)."""

    def __init__(self, settings: XmppSettings) -> None:
        plain = settings.tls == "plain"
        super().__init__(
            f"{settings.jid}/{settings.resource}",
            settings.secret(),
            plugin_config={
                "feature_mechanisms": {"unencrypted_plain": plain, "unencrypted_scram": plain},
                "xep_0092": {"software_name": VERSION, "version": "1"},
            },
        )
        self.settings = settings
        self.enable_direct_tls = settings.tls == "direct"
        self.enable_starttls = settings.tls == "starttls"
        self.enable_plaintext = plain
        self.ssl_context = client_context(ca_file=settings.ca_file, verify=settings.tls_verify)
        self.whitespace_keepalive = False  # the session pings (XEP-0199) and notices silence
        for plugin in ("xep_0030", "xep_0092", "xep_0199", "xep_0198"):
            self.register_plugin(plugin)
        self.sink: Callable[[Event], None] | None = None
        self._sock: Any = None
        self._pending: dict[int, tuple[Message, asyncio.Future[None]]] = {}
        self._asked = False  # an ack request is out: one at a time covers every message sent
        self._settling = False
        self.add_event_handler("stanza_acked", self._acked)
        self._ack_limit: int | None = None  # the most the server may be told we handled
        self._ack_behind = False
        self.plugin["xep_0198"].send_ack = self._send_ack  # type: ignore[method-assign]
        # After stream management's own filter has counted it: an iq needs no handling of ours,
        # but its count must reach the resume file in order behind the stanzas before it, or
        # the server's queue of what is unacknowledged only grows while the bot is idle.
        self.add_filter("in", self._counted_iq)
        self.register_handler(
            Callback("eevee message", MatchXPath("{jabber:client}message"), self._message)
        )
        self.register_handler(
            Callback("eevee presence", MatchXPath("{jabber:client}presence"), self._presence)
        )
        for name, kind in (
            ("session_start", "started"),
            ("session_resumed", "resumed"),
            ("disconnected", "disconnected"),
            ("connection_failed", "failed"),
            ("failed_all_auth", "auth"),
            ("ssl_invalid_chain", "untrusted"),
            ("stream_error", "stream_error"),
        ):
            self.add_event_handler(name, self._forward(kind))

    # -- what reaches the session ------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        if self.sink is not None:
            self.sink(event)

    def _forward(self, kind: str) -> Callable[[Any], None]:
        return lambda data: self._emit((kind, data))

    def _message(self, stanza: Any) -> None:
        self._emit(("message", (stanza.xml, self.plugin["xep_0198"].handled)))

    def _counted_iq(self, stanza: Any) -> Any:
        if isinstance(stanza, Iq):
            self._emit(("iq", (None, self.plugin["xep_0198"].handled)))
        return stanza

    def _presence(self, stanza: Any) -> None:
        self._emit(("presence", (stanza.xml, self.plugin["xep_0198"].handled)))

    @property
    def sm_id(self) -> str | None:
        """The stream-management id of the session (None: not resumable)."""
        sm_id = self.plugin["xep_0198"].sm_id
        return str(sm_id) if sm_id else None

    @property
    def sent(self) -> int:
        """Stanzas sent on the stream-managed session."""
        return int(self.plugin["xep_0198"].seq)

    def resume_from(self, sm_id: str, handled: int, sent: int) -> None:
        """Resume, on the first connection, the session a previous process left hibernating."""
        sm = self.plugin["xep_0198"]
        sm.sm_id, sm.handled, sm.seq, sm.last_ack = sm_id, handled, sent, sent
        self.acknowledge_up_to(handled)

    def acknowledge_up_to(self, handled: int) -> None:
        """From now on tell the server at most ``handled`` stanzas were handled (the count a
        restarted process would resume from: never less than what the server was told, or it
        refuses the resumption); an answer held back by the last limit goes out now."""
        self._ack_limit = handled
        if self._ack_behind:
            self._send_ack()

    def _send_ack(self) -> None:
        """Answer the server's ack request (in place of slixmpp's ``send_ack``), with no more
        than :meth:`acknowledge_up_to` allows: what is beyond it the server keeps, and sends
        again to a process that resumes the session."""
        sm = self.plugin["xep_0198"]
        if not self.transport:
            return
        handled = int(sm.handled)
        limit = self._ack_limit
        told = handled if limit is None or limit > handled else limit
        self._ack_behind = told < handled
        ack = Ack(self)
        ack["h"] = told
        self.send_raw(str(ack))

    def start(self) -> None:
        """Make one connection attempt (the kit, not slixmpp, decides about the next)."""
        s = self.settings
        if s.host or s.port:  # an address given: no DNS SRV lookup
            self.connect(s.server, s.server_port)
        else:
            self.connect()

    def stop_trying(self) -> None:
        """Cancel a connection attempt in progress (slixmpp would otherwise retry forever)."""
        self.cancel_connection_attempt()

    def drop(self) -> None:
        """Close the connection at once, without ending the XMPP session, so that the next
        connection can resume it."""
        self.cancel_connection_attempt()
        self.abort()

    @property
    def encrypted(self) -> bool:
        """True when the connection is TLS."""
        transport = self.transport
        return transport is not None and transport.get_extra_info("ssl_object") is not None

    # -- quick acknowledgements --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport, send_event: bool = True) -> None:
        self._sock = transport.get_extra_info("socket")
        super().connection_made(transport, send_event)

    def data_received(self, data: bytes | str) -> None:
        sock = self._sock
        if sock is not None and _QUICKACK is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        super().data_received(data)

    def connection_lost(self, exception: BaseException | None) -> None:
        self._sock = None
        super().connection_lost(exception)

    # -- messages until the server has them ------------------------------------------------

    def send_chat(self, target: str, text: str, kind: MessageType) -> asyncio.Future[None] | None:
        """Send a message; a future that completes once the server acknowledged it (None when
        the session has no stream management: then it is as sent as it will be)."""
        msg = self.make_message(mto=JID(target), mbody=text, mtype=kind)
        msg.send()
        if not self.plugin["xep_0198"].enabled_out:
            return None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[id(msg)] = (msg, done)
        self.request_ack()
        return done

    def request_ack(self, again: bool = False) -> None:
        """Ask the server to acknowledge what it has, unless a request is already out (a burst
        of messages costs one request per answer, not one each); ``again`` asks anyway (the
        answer to the last one may have been lost with a connection)."""
        if self._asked and not again:
            return
        self._asked = True
        self.send(RequestAck(self))  # queued after the messages: its answer covers them

    def _acked(self, stanza: Any) -> None:
        entry = self._pending.pop(id(stanza), None)
        if entry is not None and not entry[1].done():
            entry[1].set_result(None)
        if not self._settling:  # once per answer, after all the stanzas it acknowledged
            self._settling = True
            asyncio.get_running_loop().call_soon(self._answered)

    def _answered(self) -> None:
        self._settling = False
        self._asked = False
        if self._pending:
            self.request_ack()

    @property
    def pending(self) -> int:
        """Messages sent and not yet acknowledged by the server."""
        return len(self._pending)

    def adopt_pending(self, old: XmppStream) -> int:
        """Take over what ``old`` (a stream this one replaces: a reload changed the account or
        the server) sent and never had acknowledged: the next session sends it again and
        settles the same confirmations. How many."""
        taken, old._pending = old._pending, {}
        for msg, done in taken.values():
            again = self.make_message(mto=msg["to"], mbody=msg["body"], mtype=msg["type"])
            self._pending[id(again)] = (again, done)
        return len(taken)

    def resend_pending(self, resumed: bool) -> int:
        """On a new session, send again what the server never acknowledged (on a resumed one,
        what slixmpp did not resend itself); how many. Without stream management on the new
        session nothing can be confirmed: what was pending counts as sent."""
        sm = self.plugin["xep_0198"]
        resent_by_library = {id(s) for _, s in sm.unacked_queue} if resumed else set()
        again = [msg for key, (msg, _) in self._pending.items() if key not in resent_by_library]
        for msg in again:
            self.send(msg)
        if not sm.enabled_out:
            pending, self._pending = self._pending, {}
            for _, done in pending.values():
                if not done.done():
                    done.set_result(None)
        elif self._pending:
            self.request_ack(again=True)
        return len(again)


def tls_failure(exc: object) -> str:
    """Words for a TLS failure, saying what to do about it."""
    reason = getattr(exc, "verify_message", None) or str(exc) or type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate of the server not trusted ({reason}): set ca_file to the CA"
            " that signed it, or fix the server's certificate"
        )
    return f"TLS failed: {reason}"


class _ToOperatorLog(logging.Handler):
    """slixmpp's warnings and errors, as the operator's own log records."""

    def __init__(self, log: Any) -> None:
        super().__init__(logging.WARNING)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        level = "error" if record.levelno >= logging.ERROR else "warning"
        with contextlib.suppress(Exception):
            getattr(self.log, level)(record.getMessage(), library="slixmpp")


def route_library_logs(log: Any) -> None:
    """Send slixmpp's warnings and errors to ``log`` (structured, on the bus) instead of
    plain lines on stderr; idempotent."""
    library = logging.getLogger("slixmpp")
    for handler in list(library.handlers):
        if isinstance(handler, _ToOperatorLog):
            library.removeHandler(handler)
    library.addHandler(_ToOperatorLog(log))
    library.propagate = False
