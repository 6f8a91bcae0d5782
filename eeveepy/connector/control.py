"""``chat.ctl`` in the kit's words: rooms and users, platform actions under the platform's name.

On the wire a :class:`~eeveepy.protocol.models.ConnectorControl` says ``join``, ``part``,
``names`` or ``nick`` (the schema keeps those words). The kit hands platforms a
:class:`ControlRequest` instead:

- ``join``/``part``/``names`` become the room actions ``room.join``, ``room.part``,
  ``room.users`` (:class:`RoomAction`), which every chat platform has;
- any other word is the platform's own and is namespaced with its name: ``nick`` on the IRC
  connector is ``irc.nick`` (an IRC nick is not an XMPP room nick nor a Matrix display name).

A platform declares the actions it serves (:func:`check_actions` holds it to the naming);
the others are answered "not supported" without reaching it. :class:`Expect` is the usual way
to answer a request from what the session receives next (a JOIN echo, an error numeric).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Generic, TypeVar

from eeveepy.errors import ConnectorError
from eeveepy.protocol.models import ConnectorControl, ConnectorControlResult

T = TypeVar("T")
R = TypeVar("R")


class RoomAction(StrEnum):
    """The control actions every chat platform has."""

    JOIN = "room.join"
    """Join ``room`` (with ``key``); a joined room is rejoined after every reconnect."""
    PART = "room.part"
    """Leave ``room`` (saying ``reason``); it is not rejoined any more."""
    USERS = "room.users"
    """List the users in ``room`` (the answer's ``users``)."""


WIRE_ROOM_ACTIONS: Final = {
    "join": RoomAction.JOIN,
    "part": RoomAction.PART,
    "names": RoomAction.USERS,
}
"""The ``chat.ctl`` words of the room actions; every other word is platform-specific."""


@dataclass(frozen=True)
class ControlRequest:
    """One ``chat.ctl`` request as a platform sees it.

    ``action`` is a :class:`RoomAction` value or ``<platform>.<word>``; ``wire`` is the word it
    came as (answers start with it: ``join: ...``). ``name`` is the new name of the bot for a
    rename (the wire's ``nick``).
    """

    action: str
    wire: str = ""
    room: str | None = None
    key: str | None = None
    name: str | None = None
    reason: str | None = None

    @classmethod
    def from_wire(cls, req: ConnectorControl, platform: str) -> ControlRequest:
        """The kit's request for ``req`` received by the connector of ``platform``."""
        action = WIRE_ROOM_ACTIONS.get(req.action) or f"{platform}.{req.action}"
        return cls(
            action=str(action),
            wire=req.action,
            room=req.room,
            key=req.key,
            name=req.nick,
            reason=req.reason,
        )

    @property
    def room_action(self) -> RoomAction | None:
        """The room action this is, or None for a platform action."""
        try:
            return RoomAction(self.action)
        except ValueError:
            return None

    @property
    def label(self) -> str:
        """How answers name the request: the wire word, else the action."""
        return self.wire or self.action

    def ok(self, message: str, users: list[str] | None = None) -> ConnectorControlResult:
        """A success answer."""
        return ConnectorControlResult(ok=True, message=message, users=users or [])

    def refuse(self, why: str) -> ConnectorControlResult:
        """A failure answer: ``<label>: <why>``."""
        return refused(f"{self.label}: {why}")


def refused(message: str) -> ConnectorControlResult:
    """A failure answer saying ``message`` as it is."""
    return ConnectorControlResult(ok=False, message=message)


def check_actions(platform: str, actions: Iterable[str]) -> frozenset[str]:
    """``actions`` as a set, once each is a room action or ``<platform>.<word>``."""
    rooms = {str(a) for a in RoomAction}
    for action in actions:
        word = action.removeprefix(f"{platform}.")
        if action not in rooms and (word == action or not word or "." in word):
            raise ConnectorError(
                f"control action {action!r} of platform {platform!r} must be one of "
                f"{sorted(rooms)} or '{platform}.<word>'"
            )
    return frozenset(actions)


class Expect(Generic[T]):
    """Futures waiting for what a session receives.

    :meth:`expect` registers a matcher; every received item is given to each matcher by
    :meth:`feed` until one returns something other than None, which becomes its future's
    result (a matcher that raises fails its future). :meth:`fail` ends every waiter, e.g.
    when the session is lost.
    """

    def __init__(self) -> None:
        self._waiters: list[tuple[Callable[[T], Any], asyncio.Future[Any]]] = []

    def __len__(self) -> int:
        return len(self._waiters)

    def expect(self, matcher: Callable[[T], R | None]) -> asyncio.Future[R]:
        """A future for the first result of ``matcher``; await it under a timeout."""
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiters.append((matcher, fut))
        return fut

    def feed(self, item: T) -> None:
        """Give ``item`` to every waiting matcher."""
        for matcher, fut in self._waiters:
            if fut.done():
                continue
            try:
                result = matcher(item)
            except Exception as exc:
                fut.set_exception(exc)
                continue
            if result is not None:
                fut.set_result(result)
        self._waiters = [w for w in self._waiters if not w[1].done()]

    def fail(self, exc: BaseException) -> None:
        """End every waiter with ``exc``."""
        waiters, self._waiters = self._waiters, []
        for _, fut in waiters:
            if not fut.done():
                fut.set_exception(exc)
