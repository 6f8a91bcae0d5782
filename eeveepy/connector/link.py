"""The platform's only way to the bus: :class:`Link`.

A platform's session hands what it receives to its link: chat messages
(:meth:`Link.message`, a stored publish on ``chat.in``: once the stream has it, it is answered
even if the router or the bus dies), chat events (:meth:`Link.event`) and its connection state
(:meth:`Link.state`, which publishes ``connected``/``disconnected`` once per change). The link
also holds what a session needs to know across reconnects: the bot's own identity
(:attr:`Link.me`, whose echoed messages are dropped) and the rooms wanted (:class:`Rooms`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from eeveepy.aio import cancel_and_wait
from eeveepy.bus.ipc import Ipc
from eeveepy.connector.egress import Outbound
from eeveepy.connector.state import ConnectionState, StateTracker
from eeveepy.errors import EeveeError
from eeveepy.protocol.models import ChatEvent, ChatMessage, ChatUser
from eeveepy.protocol.subjects import Subjects

if TYPE_CHECKING:
    from eeveepy.runtime.operator import Operator


@dataclass(frozen=True)
class Room:
    """A room the connector wants to be in; ``key`` its password, if it has one."""

    name: str
    key: str | None = None


class Rooms:
    """The rooms wanted, in the order they were wanted, compared by ``fold(name)``."""

    def __init__(self, fold: Callable[[str], str] = str) -> None:
        self._fold = fold
        self._rooms: dict[str, Room] = {}

    def __iter__(self) -> Iterator[Room]:
        return iter(list(self._rooms.values()))

    def __len__(self) -> int:
        return len(self._rooms)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._fold(name) in self._rooms

    def reset(self, rooms: Iterable[Room]) -> None:
        """Want exactly ``rooms`` (the settings at start or after a new session)."""
        self._rooms = {self._fold(r.name): r for r in rooms}

    def want(self, room: Room) -> None:
        """Want ``room`` (a successful join), replacing its key."""
        self._rooms[self._fold(room.name)] = room

    def drop(self, name: str) -> Room | None:
        """Want ``name`` no more (a part); the room it was, if wanted."""
        return self._rooms.pop(self._fold(name), None)

    def diff(self, rooms: Iterable[Room]) -> tuple[list[Room], list[Room]]:
        """``(added, removed)`` going from the rooms wanted to ``rooms`` (a reload); a room
        whose key changed counts as added."""
        new = {self._fold(r.name): r for r in rooms}
        added = [r for k, r in new.items() if k not in self._rooms or self._rooms[k].key != r.key]
        removed = [r for k, r in self._rooms.items() if k not in new]
        return added, removed


_Publish = tuple[str, ChatEvent, "asyncio.Future[None]"]

STORE_WINDOW: Final = 64
"""Chat messages being stored at once, for a platform that does not wait for each."""
STORE_CLOSE_WAIT: Final = 2.0
"""Seconds a closing link waits for the messages still being stored."""


class Link:
    """What a platform reaches the bus through, for the connector operator ``op``.

    ``fold`` compares room and user names as the platform does. :attr:`on_change` is called
    with each new state (the runner rejoins the wanted rooms when connected).
    """

    def __init__(self, op: Operator[Any], platform: str, fold: Callable[[str], str] = str) -> None:
        self.op = op
        self.platform = platform
        self.network = ""
        self.me: ChatUser | None = None
        """The bot itself on the platform (set by the session, kept current when its name
        changes): its echoes are dropped, and it is the ``user`` of the ``connected`` and
        ``disconnected`` events."""
        self.rooms = Rooms(fold)
        self.tracker = StateTracker()
        self.on_change: Callable[[ConnectionState], None] = lambda _state: None
        self.put: Callable[[Outbound], object] = lambda _item: None
        """Queue a send of the platform's own (an answer to a CTCP query...) behind flood
        control, like a rendered message (set by the runner to its egress pump)."""
        self._fold = fold
        self._queue: asyncio.Queue[_Publish] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._storing: deque[asyncio.Future[None]] = deque()
        """The messages sent and not yet stored (``wait=False``), oldest first."""

    @property
    def ipc(self) -> Ipc:
        """The operator's bus, for a platform that lives on it (the console)."""
        return self.op.ipc

    @property
    def subjects(self) -> Subjects:
        """The subject builder of the bus prefix in use."""
        return self.op.subjects

    @property
    def log(self) -> Any:
        """The operator's structlog logger."""
        return self.op.log

    @property
    def connection(self) -> ConnectionState:
        """Where the session stands."""
        return self.tracker.state

    @property
    def connected(self) -> bool:
        """True while the platform has accepted the session."""
        return self.tracker.connected

    def open(self, network: str) -> None:
        """Start serving ``network`` (the events' publisher starts)."""
        self.network = network
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._publish(), name="link")

    async def close(self) -> None:
        """Stop publishing events (what is still queued is dropped); messages still being
        stored get a moment to be."""
        worker, self._worker = self._worker, None
        if worker is not None:
            await cancel_and_wait(worker, timeout=1.0)
        storing, self._storing = self._storing, deque()
        if storing:
            await asyncio.wait(storing, timeout=STORE_CLOSE_WAIT)
            for stored in storing:
                stored.cancel()  # (and with it the sending again, if it was sent again)
        while not self._queue.empty():
            self._queue.get_nowait()[2].cancel()

    async def message(
        self, msg: ChatMessage, *, msg_id: str | None = None, wait: bool = True
    ) -> None:
        """Publish a received chat message and return once it is stored (or given up).

        Await it before reading the next one from the platform: that is the delivery
        guarantee (docs/protocol.md, "Delivery of chat input"). The bot's own echo is dropped.
        ``msg_id`` is the envelope id to publish under (default: a new one): a platform that
        may read a message again after a restart (a Matrix sync resumed from its last stored
        token) derives it from the platform's message id, so that the chat input stream
        stores a message read twice within its duplicate window once.

        ``wait=False`` is for a platform that can never read a message again (IRC: a line
        read off the socket is gone): it returns once the message is sent, and the stream's
        acknowledgements are awaited behind it, at most :data:`STORE_WINDOW` at once, so a
        burst is stored at the pace of the bus, not one round trip per line. Sent in the
        order read, on one connection, they are stored in that order.
        """
        if self.me is not None and self._fold(msg.user.id) == self._fold(self.me.id):
            return
        if wait:
            await self._store(msg, msg_id)
            return
        storing = self._storing
        while storing and storing[0].done():
            storing.popleft()
        while len(storing) >= STORE_WINDOW:
            await asyncio.wait((storing.popleft(),))
        # Sent in this turn of the event loop; its receipt is awaited without a task.
        try:
            subject = self.subjects.chat_in(self.platform, self.network, msg.room)
            stored = await self.ipc.store_soon(subject, msg, msg_id=msg_id)
        except EeveeError as exc:
            self.log.warning("cannot publish chat message", room=msg.room, error=str(exc))
            return
        stored.add_done_callback(partial(self._stored, msg.room))
        storing.append(stored)

    def _stored(self, room: str, stored: asyncio.Future[None]) -> None:
        if not stored.cancelled() and (exc := stored.exception()) is not None:
            self.log.warning("cannot publish chat message", room=room, error=str(exc))

    async def _store(self, msg: ChatMessage, msg_id: str | None) -> None:
        try:
            subject = self.subjects.chat_in(self.platform, self.network, msg.room)
            await self.ipc.publish_stored(subject, msg, msg_id=msg_id)
        except EeveeError as exc:
            self.log.warning("cannot publish chat message", room=msg.room, error=str(exc))

    async def event(self, ev: ChatEvent) -> None:
        """Publish a chat event (after the events and state changes told before it)."""
        await self._enqueue(ev)

    def state(self, new: ConnectionState, why: str = "") -> asyncio.Future[None]:
        """Say where the session stands; ``why`` is the event's text (reason, server name).

        A change worth an event publishes ``connected`` or ``disconnected`` (once per
        change); the result completes once it is published (awaiting it is optional).
        """
        old = self.tracker.state
        event = self.tracker.change(new)
        if event is None:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
        else:
            body = ChatEvent(
                platform=self.platform,
                network=self.network,
                event=event,
                user=self.me,
                text=why or None,
            )
            done = self._enqueue(body)
        if new is not old:
            self.log.info("connection", state=new.value, network=self.network, why=why or None)
            self.on_change(new)
        return done

    def _enqueue(self, ev: ChatEvent) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._worker is None:  # not open (stopping): nothing can be published any more
            self.log.debug("chat event not published: closed", event=ev.event.value)
            done.set_result(None)
            return done
        subject = self.subjects.chat_event(self.platform, ev.network, ev.event.value)
        self._queue.put_nowait((subject, ev, done))
        return done

    async def _publish(self) -> None:
        while True:
            subject, ev, done = await self._queue.get()
            try:
                await self.ipc.publish(subject, ev)
            except Exception as exc:  # the publisher must outlive a bus that is away
                self.log.warning("cannot publish chat event", event=ev.event.value, error=repr(exc))
            finally:
                with contextlib.suppress(asyncio.InvalidStateError):
                    done.set_result(None)
