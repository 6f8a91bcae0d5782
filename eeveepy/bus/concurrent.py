"""Handlers of one subscription run side by side, started in the order messages came.

A subscription hands its messages to its handler one at a time by default: the next waits
until the handler returned. With ``concurrency=N`` (see :meth:`~eeveepy.bus.ipc.Ipc.subscribe`)
up to N handlers run at once, each in a task of its own started in arrival order, so a handler
that waits (on a reply being stored, on a slow service) no longer holds up the messages behind
it; what each handler does before its first wait still happens in arrival order (an echo's
replies go out in the order of the commands). Each request is answered when its own handler
returns, and a handler that raises is logged and answered with an error, as on the serial path.
Only plain subscriptions take it: a durable one acknowledges in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from eeveepy.protocol.models import Body

if TYPE_CHECKING:
    from eeveepy.bus.dispatch import Dispatch, Handler, SubscriptionStats

__all__ = ["Concurrent"]


class Concurrent:
    """Runs ``handler`` in tasks, at most ``limit`` at once; itself a handler to await."""

    def __init__(
        self,
        handler: Handler,
        is_async: bool,
        limit: int,
        dispatch: Dispatch,
        stats: SubscriptionStats,
        subject: str,
        on_done: Callable[[], None],
    ) -> None:
        self._handler = handler
        self._is_async = is_async
        self._slots = asyncio.Semaphore(limit)
        self._dispatch = dispatch
        self._stats = stats
        self._subject = subject
        self._on_done = on_done
        self.tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, message: Any) -> None:
        """Start the handler on ``message`` once a slot is free (the caller's context, with
        the message being handled, is the task's)."""
        await self._slots.acquire()
        current = self._dispatch.ipc.handling.get()
        reply = current[0] if current is not None else ""
        env = current[1] if current is not None else None
        loop = self._loop
        if loop is None:  # (asyncio.get_running_loop() is a getpid() call on Python 3.11)
            loop = self._loop = asyncio.get_running_loop()
        task = loop.create_task(self._run(message, reply, env))
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self._slots.release()
        self._on_done()

    async def _run(self, message: Any, reply: str, env: Any) -> None:
        try:
            result = self._handler(message)
            if self._is_async:
                result = await result
            if reply and isinstance(result, Body):
                await self._dispatch.answer(reply, result)
        except Exception as exc:
            self._stats.failed += 1
            await self._dispatch.failed(self._handler, self._subject, reply, env, exc)

    def cancel(self) -> list[Awaitable[None]]:
        """Cancel every running handler; what to wait for."""
        for task in self.tasks:
            task.cancel()
        return list(self.tasks)
