"""The IRC client as a state machine without I/O: lines in, lines to send and events out.

:class:`IrcProtocol` knows the protocol and nothing about sockets, time or the bus:

- :meth:`~IrcProtocol.connect` starts registration on a new connection (``CAP LS 302``,
  ``PASS``, ``NICK``, ``USER``);
- :meth:`~IrcProtocol.feed` takes one parsed server line and returns the
  :mod:`~operators.irc.events` it means, after updating the :class:`~operators.irc.state.
  ServerState` (nick, ISUPPORT, channels joined, accounts);
- :meth:`~IrcProtocol.data_to_send` hands over the lines to write, in order.

It registers, negotiates capabilities and SASL (:mod:`~operators.irc.negotiation`), falls
back to alternate nicks when the wanted one is taken (433), invalid (432) or held (437),
answers ``PING``, reads ISUPPORT, and leaves channels, users and messages to its
:class:`~operators.irc.tracking.Tracker` (which takes the wanted nick back when its holder
leaves or renames). The server's command word picks a handler from one explicit table. The
connector does the I/O; the tests feed it lines, including the branches real servers rarely
produce.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from eeveepy.errors import SaslFailedError
from operators.irc.events import (
    Event,
    LoggedIn,
    NickRefused,
    Registered,
    SaslFailed,
    SaslMechanisms,
    ServerError,
)
from operators.irc.lines import IrcLine, format_line
from operators.irc.negotiation import Negotiation
from operators.irc.settings import Channel, IrcSettings
from operators.irc.state import ServerState
from operators.irc.tracking import Tracker

__all__ = ["IrcProtocol"]

JOIN_BATCH: Final = 300
"""Characters of channel names per ``JOIN`` line when rejoining."""


class IrcProtocol:
    """One IRC client's protocol state, across connections (:meth:`connect` starts afresh)."""

    def __init__(self, settings: IrcSettings) -> None:
        self.settings = settings
        """The settings of the next connection (and of this one, until a reload)."""
        self.state = ServerState(settings.nick)
        self.failed = False
        """SASL failed on this connection: every later line is ignored."""
        self._out: list[str] = []
        self._events: list[Event] = []
        self._nick_tries = 0
        self._negotiation = Negotiation(settings, self.state, self._send)
        tracker = Tracker(self.state, self._send, self._emit, self.reclaim)
        # The server's command word picks a handler from this table, and only from it.
        self._handlers: dict[str, Callable[[IrcLine], None]] = {
            "PING": self._ping,
            "ERROR": lambda ln: self._emit(ServerError(ln.param(-1))),
            "CAP": lambda ln: self._negotiation.cap(ln),
            "AUTHENTICATE": lambda ln: self._negotiation.authenticate(ln),
            "001": self._welcome,
            "005": self._isupport,
            "396": self._host_hidden,
            "900": self._logged_in,
            "903": lambda _: self._negotiation.succeeded(),
            "902": self._sasl_refused,
            "904": self._sasl_refused,
            "905": self._sasl_refused,
            "906": self._sasl_refused,
            "908": lambda ln: self._emit(SaslMechanisms(ln.param(1))),
            "431": self._nick_refused,
            "432": self._nick_refused,
            "433": self._nick_refused,
            "436": self._nick_refused,
            "437": self._unavailable,
            "JOIN": tracker.join,
            "354": tracker.whox,
            "ACCOUNT": tracker.account,
            "PART": tracker.part,
            "KICK": tracker.kick,
            "QUIT": tracker.quit,
            "NICK": tracker.nick,
            "TOPIC": tracker.topic,
            "INVITE": tracker.invite,
            "CHGHOST": tracker.chghost,
            "PRIVMSG": tracker.privmsg,
            "NOTICE": tracker.notice,
        }

    # -- driving -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the connection (what was learnt, what was not sent yet)."""
        self.state.reset()
        self.failed = False
        self._out = []
        self._nick_tries = 0
        self._negotiation = Negotiation(self.settings, self.state, self._send)

    def connect(self) -> None:
        """A new connection is open: start registration."""
        self.reset()
        s = self.settings
        self._send("CAP", "LS", "302")
        if s.password:
            self._send("PASS", s.password)
        self.state.nick = self.state.want_nick
        self._send("NICK", self.state.nick)
        self._send("USER", s.username or s.nick, "0", "*", s.realname)

    def feed(self, line: IrcLine) -> list[Event]:
        """Take one line from the server; what it means, in order."""
        handler = self._handlers.get(line.command)
        if handler is None or self.failed:
            return []
        events: list[Event] = []
        self._events = events
        try:
            handler(line)
        except SaslFailedError as exc:
            self.failed = True
            self._send("QUIT", "SASL authentication failed")
            events.append(SaslFailed(str(exc)))
        return events

    @property
    def pending(self) -> bool:
        """Whether lines are waiting to be written."""
        return bool(self._out)

    def data_to_send(self) -> list[str]:
        """The lines to write now (without CR LF), oldest first; taking them empties the queue."""
        out, self._out = self._out, []
        return out

    def join(self, channels: Iterable[Channel]) -> None:
        """Join ``channels``: as few ``JOIN`` lines as fit, channels with keys first."""
        chans = sorted(channels, key=lambda c: c.key is None)
        batch: list[Channel] = []
        for chan in [*chans, None]:
            names = ",".join(c.name for c in batch)
            if batch and (chan is None or len(names) + len(chan.name) > JOIN_BATCH):
                keys = ",".join(c.key or "x" for c in batch if c.key)
                self._send("JOIN", names, *([keys] if keys else []))
                batch = []
            if chan is not None:
                batch.append(chan)

    def reclaim(self) -> bool:
        """Ask for the wanted nick again if the bot has another one; whether it asked."""
        st = self.state
        if st.registered and not st.same(st.nick, st.want_nick):
            self._send("NICK", st.want_nick)
            return True
        return False

    def _send(self, command: str, *params: str) -> None:
        self._out.append(format_line(command, *params))

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    # -- registration ------------------------------------------------------------------------

    def _ping(self, line: IrcLine) -> None:
        self._send("PONG", *(line.params[-1:] or ["eevee"]))

    def _welcome(self, line: IrcLine) -> None:
        self._negotiation.registered()
        st = self.state
        st.nick = line.param(0) or st.nick
        st.server = line.source or ""
        st.registered = True
        self._emit(Registered(st.nick, st.server))

    def _isupport(self, line: IrcLine) -> None:
        for token in line.params[1:-1]:
            key, _, value = token.partition("=")
            if key.startswith("-"):
                self.state.isupport.pop(key[1:], None)
            else:
                self.state.isupport[key] = value

    def _host_hidden(self, line: IrcLine) -> None:
        host = line.param(1)
        if host and self.state.user_host:
            self.state.user_host = self.state.user_host.partition("@")[0] + "@" + host

    def _logged_in(self, line: IrcLine) -> None:
        self.state.account = line.param(2) or None
        self._emit(LoggedIn(self.state.account))

    def _sasl_refused(self, line: IrcLine) -> None:
        self._negotiation.fail(f"server replied {line.command} {line.param(-1)}".strip())

    def _nick_refused(self, line: IrcLine) -> None:
        st = self.state
        if st.registered:
            self._emit(NickRefused(line.param(1), line.param(-1)))
            return
        self._nick_tries += 1
        candidates = [st.want_nick, *self.settings.alt_nicks]
        if self._nick_tries < len(candidates):
            nick = candidates[self._nick_tries]
        else:
            extra = self._nick_tries - len(candidates) + 1
            nick = st.want_nick + "_" * extra if extra <= 4 else f"{st.want_nick[:7]}{extra}"
        st.nick = nick
        self._send("NICK", nick)

    def _unavailable(self, line: IrcLine) -> None:
        # 437 is about a nick (held after a split or a nick change) or a channel.
        if not self.state.is_channel(line.param(1)):
            self._nick_refused(line)
