"""Control requests on ``{p}.chat.ctl.irc.<network>``: join, part, nick, names.

Each request is checked first (a room must be one channel of the server, a key one key, a
nick one nick: ``0``, ``#a,#b`` and the like are refused with ``ok: false``), then sent, and
answered once the server's reply arrives (:class:`Expect` matches the lines read), within
:data:`CTL_TIMEOUT` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, Protocol

from structlog.typing import FilteringBoundLogger

from eeveepy.errors import IrcConnectionError
from eeveepy.protocol.models import ConnectorControl, ConnectorControlResult
from operators.irc.lines import IrcLine
from operators.irc.safety import defuse, key_problem
from operators.irc.settings import Channel
from operators.irc.state import ServerState

__all__ = ["CTL_TIMEOUT", "ControlHost", "Expect", "IrcControl"]

CTL_TIMEOUT: Final = 10.0
"""Seconds a control request waits for the server's answer."""
JOIN_ERRORS: Final = frozenset({"403", "405", "437", "471", "473", "474", "475", "476", "477"})
NICK_ERRORS: Final = frozenset({"431", "432", "433", "436", "437", "484"})

Matcher = Callable[[IrcLine], Any]
"""Looks at a server line: None when it is not the answer, else the answer (True: done)."""


class Expect:
    """Requests waiting for the server line that answers them."""

    def __init__(self) -> None:
        self._waiters: list[tuple[Matcher, asyncio.Future[Any]]] = []

    def __call__(self, matcher: Matcher) -> asyncio.Future[Any]:
        """A future set to the first non-None ``matcher(line)`` of the lines to come."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append((matcher, fut))
        return fut

    def feed(self, line: IrcLine) -> None:
        """Show ``line`` to every waiting matcher."""
        if not self._waiters:
            return
        for matcher, fut in list(self._waiters):
            if fut.done():
                continue
            try:
                result = matcher(line)
            except Exception as exc:  # a matcher's bug fails its own request only
                fut.set_exception(exc)
                continue
            if result is not None:
                fut.set_result(result)
        self._waiters = [w for w in self._waiters if not w[1].done()]

    def fail_all(self, exc: Exception) -> None:
        """The connection is gone: every waiting request fails with ``exc``."""
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._waiters.clear()


class ControlHost(Protocol):
    """What control requests need from the connector."""

    @property
    def network(self) -> str: ...
    @property
    def connected(self) -> bool: ...
    @property
    def state(self) -> ServerState: ...
    @property
    def wanted(self) -> dict[str, Channel]: ...
    @property
    def log(self) -> FilteringBoundLogger: ...
    async def send(self, command: str, *params: str) -> bool: ...


def _result(ok: bool, message: str, users: list[str] | None = None) -> ConnectorControlResult:
    return ConnectorControlResult(ok=ok, message=message, users=users or [])


class IrcControl:
    """Serves the control requests of one connector."""

    def __init__(self, host: ControlHost) -> None:
        self._host = host
        self.expect = Expect()

    async def serve(self, req: ConnectorControl) -> ConnectorControlResult:
        """Serve a join / part / nick / names request."""
        try:
            if req.action == "nick":
                return await self._nick(req.nick or "")
            return await self._room(req)
        except (TimeoutError, IrcConnectionError) as exc:
            why = "no answer from the server" if isinstance(exc, TimeoutError) else str(exc)
            return _result(False, f"{req.action}: {why}")

    async def _ask(self, matcher: Matcher, command: str, *params: str) -> Any:
        fut = self.expect(matcher)
        await self._host.send(command, *params)
        return await asyncio.wait_for(fut, CTL_TIMEOUT)

    async def _room(self, req: ConnectorControl) -> ConnectorControlResult:
        host, st = self._host, self._host.state
        room = req.room or ""
        problem = st.channel_problem(room) if room else "a room is needed"
        if problem is None and req.key is not None:
            problem = key_problem(req.key)
        if problem is not None:
            host.log.warning("irc: refusing a control request", action=req.action, reason=problem)
            return _result(False, f"{req.action}: {problem}")
        if not host.connected:
            return _result(False, f"not connected to {host.network}")
        if req.action == "join":
            return await self._join(room, req.key)
        if req.action == "part":
            return await self._part(room, req.reason)
        return await self._names(room)

    async def _join(self, room: str, key: str | None) -> ConnectorControlResult:
        st, wanted = self._host.state, self._host.wanted
        if st.lower(room) in st.joined:
            wanted[st.lower(room)] = Channel(name=room, key=key)
            return _result(True, f"already in {room}")

        def joined(ln: IrcLine) -> Any:
            if ln.command == "JOIN" and st.same(ln.nick, st.nick) and st.same(ln.param(0), room):
                return True
            if ln.command in JOIN_ERRORS and st.same(ln.param(1), room):
                return ln.param(-1) or ln.command
            return None

        result = await self._ask(joined, "JOIN", room, *([key] if key else []))
        if result is True:
            wanted[st.lower(room)] = Channel(name=room, key=key)
            return _result(True, f"joined {room}")
        return _result(False, f"cannot join {room}: {result}")

    async def _part(self, room: str, reason: str | None) -> ConnectorControlResult:
        st = self._host.state
        self._host.wanted.pop(st.lower(room), None)
        if st.lower(room) not in st.joined:
            return _result(True, f"not in {room}")

        def parted(ln: IrcLine) -> Any:
            if ln.command in ("PART", "KICK") and st.same(ln.param(0), room):
                who = ln.nick if ln.command == "PART" else ln.param(1)
                return True if st.same(who, st.nick) else None
            if ln.command in ("403", "442") and st.same(ln.param(1), room):
                return ln.param(-1) or ln.command
            return None

        result = await self._ask(parted, "PART", room, *([defuse(reason)] if reason else []))
        if result is True:
            return _result(True, f"left {room}")
        return _result(False, f"cannot part {room}: {result}")

    async def _names(self, room: str) -> ConnectorControlResult:
        st = self._host.state
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
            return _result(False, f"names {room}: {result}")
        return _result(True, f"{len(users)} users", users)

    async def _nick(self, nick: str) -> ConnectorControlResult:
        host, st = self._host, self._host.state
        problem = st.nick_problem(nick)
        if problem is not None:
            return _result(False, f"nick: {problem}")
        if not host.connected:
            return _result(False, f"not connected to {host.network}")
        if st.same(st.nick, nick) and st.nick == nick:
            st.want_nick = nick
            return _result(True, f"already {nick}")
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
            return _result(True, f"now {nick}")
        return _result(False, f"cannot take {nick}: {result}")
