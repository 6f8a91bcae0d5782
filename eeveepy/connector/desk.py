"""``chat.ctl`` served concurrently: each request in a task of its own.

One subscription delivers requests one at a time, so a ``join`` that waits for the server
(up to :data:`CTL_TIMEOUT` seconds) would hold every request behind it. The desk takes each
request off the subscription at once and answers it from its own task (the task inherits the
request's context, so ``ipc.respond`` answers the right requester).

Before the platform sees a request the desk answers, in this order: an action the platform
does not serve ("not supported"), a room action without a room ("a room is needed"), what the
platform's :meth:`~eeveepy.connector.platform.Platform.check` refuses, and any request while
the session is down ("not connected to <network>"). It keeps the rooms wanted: a successful
join is rejoined after every reconnect, a part is not any more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Final

from eeveepy.bus.ipc import Subscription
from eeveepy.connector.control import ControlRequest, RoomAction, refused
from eeveepy.connector.link import Link, Room
from eeveepy.connector.platform import Platform
from eeveepy.errors import ConnectorError
from eeveepy.protocol.models import ConnectorControl, ConnectorControlResult, Envelope

CTL_TIMEOUT: Final = 10.0
"""Seconds a control request may wait for the platform's answer."""


class ControlDesk:
    """Serves ``{p}.chat.ctl.<platform>.<network>`` for ``platform`` through ``link``."""

    def __init__(
        self, platform: Platform[Any], link: Link, *, timeout: float = CTL_TIMEOUT
    ) -> None:
        self.platform = platform
        self.link = link
        self.timeout = timeout
        self._sub: Subscription | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def open(self) -> None:
        """Subscribe to the requests of the link's network (closing what was open)."""
        await self.close()
        subject = self.link.subjects.chat_ctl(self.platform.name, self.link.network)
        self._sub = await self.link.ipc.subscribe(subject, self._take)

    async def close(self) -> None:
        """Unsubscribe and abandon the requests in progress (their requesters time out)."""
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.unsubscribe()
        tasks, self._tasks = set(self._tasks), set()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` beside the requests (cancelled with them at :meth:`close`)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def request(self, req: ControlRequest) -> asyncio.Task[Any]:
        """Serve ``req`` in the background, its answer logged (a reload's parts)."""
        return self.spawn(self._logged(req), name=f"ctl:{req.action}")

    async def _take(self, env: Envelope[ConnectorControl]) -> None:
        req = ControlRequest.from_wire(env.body, self.platform.name)
        self.spawn(self._serve(req), name=f"ctl:{req.action}")

    async def _serve(self, req: ControlRequest) -> None:
        result = await self.answer(req)
        try:
            await self.link.ipc.respond(result)
        except Exception as exc:  # the requester or the bus went away
            self.link.log.warning("cannot answer a control request", error=repr(exc))

    async def _logged(self, req: ControlRequest) -> None:
        result = await self.answer(req)
        log = self.link.log.info if result.ok else self.link.log.warning
        log("control", action=req.action, room=req.room, ok=result.ok, message=result.message)

    async def answer(self, req: ControlRequest) -> ConnectorControlResult:
        """The answer to ``req``: refused here, or served by the platform."""
        platform, link = self.platform, self.link
        room = req.room_action
        if req.action not in platform.actions:
            return req.refuse(f"not supported by the {platform.name} connector")
        if room is not None and not req.room:
            return req.refuse("a room is needed")
        problem = platform.check(req)
        if problem is not None:
            link.log.warning("refusing a control request", action=req.action, reason=problem)
            return req.refuse(problem)
        if not link.connected:
            return refused(f"not connected to {link.network}")
        if room is RoomAction.PART and req.room:
            link.rooms.drop(req.room)
        try:
            async with asyncio.timeout(self.timeout):
                result = await platform.control(req, link)
        except TimeoutError:
            return req.refuse("no answer from the server")
        except ConnectorError as exc:
            return req.refuse(str(exc))
        except Exception as exc:  # a bug in the platform: answer rather than time out
            link.log.exception("control request crashed", action=req.action, error=repr(exc))
            return req.refuse(f"internal error: {exc!r}")
        if room is RoomAction.JOIN and req.room and result.ok:
            link.rooms.want(Room(req.room, req.key))
        return result
