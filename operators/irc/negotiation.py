"""Capability negotiation and SASL for one IRC connection (no I/O).

``CAP LS 302`` lists what the server offers; the client requests the capabilities it can use
(:data:`WANTED_CAPS`, plus ``sasl`` when SASL is configured) and ends negotiation with
``CAP END`` once they are acknowledged, refused, or SASL has succeeded. SASL PLAIN sends the
account and password base64-encoded in 400-byte ``AUTHENTICATE`` chunks; EXTERNAL relies on
the TLS client certificate. Every way SASL cannot succeed (not offered, mechanism not offered,
capability refused, 902/904/905/906, registration completed without it) raises
:class:`~eeveepy.errors.SaslFailedError`: wrong credentials do not fix themselves, so the
connection is ended rather than carried on unauthenticated.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from enum import StrEnum
from typing import Final, NoReturn

from eeveepy.errors import SaslFailedError
from operators.irc.lines import IrcLine
from operators.irc.settings import IrcSettings
from operators.irc.state import ServerState

__all__ = ["WANTED_CAPS", "Negotiation", "SaslState"]

WANTED_CAPS: Final = frozenset(
    {"multi-prefix", "account-tag", "account-notify", "extended-join", "message-tags", "chghost"}
)
"""IRCv3 capabilities requested when offered (accounts, tags, host changes)."""
AUTHENTICATE_CHUNK: Final = 400
"""Bytes of base64 per ``AUTHENTICATE`` line (IRCv3 SASL)."""


class SaslState(StrEnum):
    """Where SASL authentication stands on this connection."""

    NONE = "none"
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"


class Negotiation:
    """CAP and SASL for one connection; ``send(command, *params)`` queues a line."""

    def __init__(
        self, settings: IrcSettings, state: ServerState, send: Callable[..., None]
    ) -> None:
        self._settings = settings
        self._state = state
        self._send = send
        self._offered: dict[str, str] = {}
        self.ended = False
        """``CAP END`` was sent."""
        self.sasl = SaslState.NONE

    def cap(self, line: IrcLine) -> None:
        """A ``CAP`` line: ``LS`` (possibly multi-line), ``ACK`` or ``NAK``."""
        sub = line.param(1).upper()
        mechanism = self._settings.sasl
        if sub == "LS":
            multiline = len(line.params) > 3 and line.params[2] == "*"
            for item in line.param(-1).split():
                name, _, value = item.partition("=")
                self._offered[name] = value
            if not multiline and not self.ended:
                self._request()
        elif sub == "ACK":
            acked = {c.lstrip("-~=") for c in line.param(-1).split()}
            self._state.caps |= acked
            if "sasl" in acked and mechanism and self.sasl is SaslState.NONE:
                self.sasl = SaslState.RUNNING
                self._send("AUTHENTICATE", mechanism)
            elif self.sasl is not SaslState.RUNNING:
                self.end()
        elif sub == "NAK":
            refused = set(line.param(-1).split())
            if mechanism and "sasl" in refused and len(refused) > 1:
                self._send("CAP", "REQ", "sasl")  # retry SASL alone
            elif mechanism:
                self.fail("the server refused the sasl capability")
            else:
                self.end()

    def _request(self) -> None:
        mechanism = self._settings.sasl
        want = set(WANTED_CAPS & self._offered.keys())
        if mechanism:
            if "sasl" not in self._offered:
                self.fail("the server does not offer SASL")
            mechanisms = self._offered["sasl"]
            if mechanisms and mechanism not in mechanisms.upper().split(","):
                self.fail(f"the server offers {mechanisms}, not {mechanism}")
            want.add("sasl")
        if want:
            self._send("CAP", "REQ", " ".join(sorted(want)))
        else:
            self.end()

    def end(self) -> None:
        """End capability negotiation (once)."""
        if not self.ended:
            self.ended = True
            self._send("CAP", "END")

    def authenticate(self, line: IrcLine) -> None:
        """The server's ``AUTHENTICATE +``: send the credentials."""
        s = self._settings
        if line.param(0) != "+" or self.sasl is not SaslState.RUNNING:
            return
        if s.sasl == "EXTERNAL":
            self._send("AUTHENTICATE", "+")
            return
        raw = f"\0{s.sasl_username}\0{s.sasl_password}".encode()
        payload = base64.b64encode(raw).decode("ascii")
        for i in range(0, len(payload), AUTHENTICATE_CHUNK):
            self._send("AUTHENTICATE", payload[i : i + AUTHENTICATE_CHUNK])
        if len(payload) % AUTHENTICATE_CHUNK == 0:
            self._send("AUTHENTICATE", "+")  # the last chunk was full: say it was the last

    def succeeded(self) -> None:
        """903: authenticated; negotiation can end."""
        self.sasl = SaslState.OK
        self.end()

    def registered(self) -> None:
        """001 arrived: refuse a registration that skipped the SASL the settings ask for."""
        if self._settings.sasl and self.sasl is not SaslState.OK:
            self.fail("the server completed registration without SASL")

    def fail(self, why: str) -> NoReturn:
        """SASL cannot succeed on this connection."""
        self.sasl = SaslState.FAILED
        raise SaslFailedError(why)
