"""IRC as a platform of the connector kit: :class:`IrcPlatform`.

The kit (:mod:`eeveepy.connector`) reconnects, keeps the rooms wanted, pumps ``chat.out``
through flood control and serves ``chat.ctl`` concurrently; this module says what that means
on IRC. A session is one :class:`~operators.irc.session.IrcSession`; a rendered message is
PRIVMSG / NOTICE lines (:func:`~operators.irc.translate.render`); rooms are channels compared
by the server's case mapping. Control requests (``room.join``, ``room.part``, ``room.users``
and ``irc.nick``) are checked against the server (one channel, one key, one nick: ``0``,
``#a,#b`` and the like are refused), sent at once and answered from the server's reply
(:class:`~eeveepy.connector.control.Expect` matches the lines read).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Final

from eeveepy import Operator
from eeveepy.connector import (
    ControlRequest,
    EgressLimits,
    Expect,
    Link,
    Outbound,
    Plan,
    Platform,
    ReconnectPolicy,
    Room,
    RoomAction,
    connector_operator,
    refused,
)
from eeveepy.connector.platform import session_changes
from eeveepy.errors import IrcConnectionError
from eeveepy.protocol.models import ConnectorControlResult, OutgoingMessage
from operators.irc.lines import IrcLine
from operators.irc.protocol import IrcProtocol
from operators.irc.safety import defuse, key_problem
from operators.irc.session import IrcSession
from operators.irc.settings import SESSION_FIELDS, Channel, IrcSettings, network_name
from operators.irc.state import ServerState
from operators.irc.translate import PLATFORM, render

__all__ = ["IrcPlatform", "create", "main"]

MAX_QUEUED_LINES: Final = 5000
"""Lines kept while the server is slow or away; beyond that the oldest are dropped (logged)."""
NICK: Final = f"{PLATFORM}.nick"
"""The control action that changes the bot's nick (the wire's ``nick``)."""
JOIN_ERRORS: Final = frozenset({"403", "405", "437", "471", "473", "474", "475", "476", "477"})
NICK_ERRORS: Final = frozenset({"431", "432", "433", "436", "437", "484"})

Matcher = Callable[[IrcLine], Any]
"""Looks at a server line: None when it is not the answer, else the answer (True: done)."""


class IrcPlatform(Platform[IrcSettings]):
    """The IRC network of one connector operator."""

    name: ClassVar[str] = PLATFORM
    session_fields: ClassVar[frozenset[str]] = SESSION_FIELDS
    actions: ClassVar[frozenset[str]] = frozenset(
        {RoomAction.JOIN, RoomAction.PART, RoomAction.USERS, NICK}
    )

    def __init__(self) -> None:
        self.proto: IrcProtocol | None = None
        """The protocol client, made at the first session (it outlives connections)."""
        self.expect: Expect[IrcLine] = Expect()
        self._blank = ServerState("")
        self._session: IrcSession | None = None

    @property
    def state(self) -> ServerState:
        """What the client knows about the server and itself (defaults before a session)."""
        return self.proto.state if self.proto is not None else self._blank

    # -- what the settings mean --------------------------------------------------------------

    def plan(self, settings: IrcSettings, operator_id: str) -> Plan:
        s = settings
        return Plan(
            network=network_name(s, operator_id),
            rooms=[Room(c.name, c.key) for c in s.channels],
            egress=EgressLimits(s.egress_lines, s.egress_period, s.egress_burst, MAX_QUEUED_LINES),
            reconnect=ReconnectPolicy(s.reconnect_min, s.reconnect_max),
        )

    def fold(self, name: str) -> str:
        return self.state.lower(name)

    def check(self, req: ControlRequest) -> str | None:
        st = self.state
        if req.action == NICK:
            return st.nick_problem(req.name or "")
        problem = st.channel_problem(req.room) if req.room else None
        if problem is None and req.key is not None:
            problem = key_problem(req.key)
        return problem

    # -- the session -------------------------------------------------------------------------

    async def session(self, settings: IrcSettings, link: Link) -> None:
        proto = self.proto
        if proto is None:
            proto = self.proto = IrcProtocol(settings)
        elif session_changes(proto.settings, settings, SESSION_FIELDS):
            proto.state.want_nick = settings.nick  # new settings: the nick they name
        proto.settings = settings
        self._session = IrcSession(proto, link, self.expect)
        try:
            await self._session.run(settings)
        finally:
            self._session = None

    def _current(self) -> IrcSession:
        session = self._session
        if session is None:
            raise IrcConnectionError("disconnected")
        return session

    async def join(self, rooms: Sequence[Room]) -> None:
        session, st = self._session, self.state
        if session is None:
            return  # the session ended meanwhile: the next one joins them all
        fresh = [r for r in rooms if st.lower(r.name) not in st.joined]
        session.proto.join(Channel.model_construct(name=r.name, key=r.key) for r in fresh)
        await session.flush()

    def render(self, out: OutgoingMessage) -> list[Outbound]:
        return render(out, self.state)

    async def send(self, item: Outbound) -> None:
        await self._current().send(item)

    def send_now(self, item: Outbound) -> bool:
        session = self._session
        return session is not None and session.send_now(item)

    async def goodbye(self) -> None:
        await self._current().write("QUIT", "shutting down")

    # -- control requests --------------------------------------------------------------------

    async def control(self, req: ControlRequest, link: Link) -> ConnectorControlResult:
        room = req.room or ""
        match req.room_action:
            case RoomAction.JOIN:
                return await self._join(req, room)
            case RoomAction.PART:
                return await self._part(req, room)
            case RoomAction.USERS:
                return await self._names(req, room)
        return await self._nick(req, req.name or "")

    async def _ask(self, matcher: Matcher, command: str, *params: str) -> Any:
        """Send a line at once and wait (the kit bounds it) for the line ``matcher`` takes."""
        fut = self.expect.expect(matcher)
        await self._current().write(command, *params)
        return await fut

    async def _join(self, req: ControlRequest, room: str) -> ConnectorControlResult:
        st = self.state
        if st.lower(room) in st.joined:
            return req.ok(f"already in {room}")

        def joined(ln: IrcLine) -> Any:
            if ln.command == "JOIN" and st.same(ln.nick, st.nick) and st.same(ln.param(0), room):
                return True
            if ln.command in JOIN_ERRORS and st.same(ln.param(1), room):
                return ln.param(-1) or ln.command
            return None

        result = await self._ask(joined, "JOIN", room, *([req.key] if req.key else []))
        if result is True:
            return req.ok(f"joined {room}")
        return refused(f"cannot join {room}: {result}")

    async def _part(self, req: ControlRequest, room: str) -> ConnectorControlResult:
        st = self.state
        if st.lower(room) not in st.joined:
            return req.ok(f"not in {room}")

        def parted(ln: IrcLine) -> Any:
            if ln.command in ("PART", "KICK") and st.same(ln.param(0), room):
                who = ln.nick if ln.command == "PART" else ln.param(1)
                return True if st.same(who, st.nick) else None
            if ln.command in ("403", "442") and st.same(ln.param(1), room):
                return ln.param(-1) or ln.command
            return None

        reason = [defuse(req.reason)] if req.reason else []
        result = await self._ask(parted, "PART", room, *reason)
        if result is True:
            return req.ok(f"left {room}")
        return refused(f"cannot part {room}: {result}")

    async def _names(self, req: ControlRequest, room: str) -> ConnectorControlResult:
        st = self.state
        users: list[str] = []
        prefixes = st.prefix_chars

        def names(ln: IrcLine) -> Any:
            if ln.command == "353" and st.same(ln.param(-2), room):
                users.extend(n.lstrip(prefixes).partition("!")[0] for n in ln.param(-1).split())
            elif ln.command == "366" and st.same(ln.param(1), room):
                return True
            elif ln.command in ("403", "401") and st.same(ln.param(1), room):
                return ln.param(-1) or ln.command
            return None

        result = await self._ask(names, "NAMES", room)
        if result is not True:
            return refused(f"names {room}: {result}")
        return req.ok(f"{len(users)} users", users)

    async def _nick(self, req: ControlRequest, nick: str) -> ConnectorControlResult:
        st = self.state
        if st.same(st.nick, nick) and st.nick == nick:
            st.want_nick = nick
            return req.ok(f"already {nick}")
        old = st.nick

        def renamed(ln: IrcLine) -> Any:
            if ln.command == "NICK" and st.same(ln.nick, old):
                return True
            if ln.command in NICK_ERRORS:
                return ln.param(-1) or ln.command
            return None

        result = await self._ask(renamed, "NICK", nick)
        if result is True:
            st.want_nick = nick
            return req.ok(f"now {nick}")
        return refused(f"cannot take {nick}: {result}")


def create() -> Operator[IrcSettings]:
    """Build the IRC operator (nothing runs until ``run()`` or ``serve()``)."""
    return connector_operator(IrcPlatform(), IrcSettings, name="irc")


def main() -> None:
    """Run the IRC operator as a process."""
    create().run()
