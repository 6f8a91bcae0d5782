"""The XMPP stream of one account: :class:`XmppStream`, a slixmpp client set up for a bot.

slixmpp speaks XMPP (TLS, SASL, stream management, pings); this class only chooses how:

- **TLS as the settings say**: STARTTLS required, direct TLS, or plaintext (allowed by the
  settings only to loopback or when asked for), verified with the settings' CA file.
- **Stream management (XEP-0198)** with resumption: a dropped connection resumes the same
  session, and the server replays what the bot had not acknowledged, so a short network drop
  loses nothing in either direction. When a session cannot be resumed, the messages the
  server never acknowledged are kept (:meth:`XmppStream.unacknowledged`) and sent again on
  the new one.
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
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import slixmpp
from slixmpp.stanza import Message
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from eeveepy.tls import client_context
from operators.xmpp.settings import XmppSettings

__all__ = ["Event", "XmppStream", "route_library_logs", "tls_failure"]

Event = tuple[str, Any]
"""``(kind, data)``: ``message``/``presence`` (the stanza's XML element), ``started`` (True
when resumed), ``disconnected``, ``failed``, ``auth``, ``untrusted``, ``stream_error``."""

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
        self._unacked: deque[Message] = deque()
        self.add_filter("out_sync", self._track)
        self.add_event_handler("stanza_acked", self._acked)
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
        self._emit(("message", stanza.xml))

    def _presence(self, stanza: Any) -> None:
        self._emit(("presence", stanza.xml))

    def start(self) -> None:
        """Make one connection attempt (the kit, not slixmpp, decides about the next)."""
        s = self.settings
        self.connect(s.host or None, s.server_port if s.host else None)

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

    # -- messages the server never acknowledged ----------------------------------------------

    def _track(self, stanza: Any) -> Any:
        if isinstance(stanza, Message) and self.plugin["xep_0198"].enabled_out:
            self._unacked.append(stanza)
        return stanza

    def _acked(self, stanza: Any) -> None:
        if isinstance(stanza, Message):
            while self._unacked:
                if self._unacked.popleft() is stanza:
                    break

    def unacknowledged(self) -> list[Message]:
        """The messages sent on a session that ended without acknowledging them (to be sent
        again on the new one); forgotten here."""
        pending = list(self._unacked)
        self._unacked.clear()
        return pending


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
