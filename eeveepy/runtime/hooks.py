"""An operator's lifecycle hooks: what the author registers, and how they are run.

Hooks are plain functions or coroutine functions without arguments. They run in the order
they were registered, all of one event within one timeout; a hook that raises is logged and
reported, and the others still run (except at start, where the first failure fails the start).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from structlog.typing import FilteringBoundLogger

__all__ = ["Hook", "HookEvent", "HookT", "Hooks"]

Hook = Callable[[], Awaitable[None] | None]
HookT = TypeVar("HookT", bound=Hook)


class HookEvent(StrEnum):
    """When hooks run."""

    START = "start"
    """After connecting, before Ready; a failure fails the start."""
    RELOAD = "reload"
    """After new settings were validated and set."""
    HALT = "halt"
    """When delivery is paused."""
    RESUME = "resume"
    """When delivery resumes after a halt."""
    STOP = "stop"
    """At a graceful stop, after the drain."""


_EVENTS = tuple(HookEvent)
"""Every event, listed once (iterating the enum class runs its metaclass's code: a forked
operator writes to the pages of what it runs)."""


@dataclass
class Hooks:
    """The registered hooks of one operator, by event."""

    registered: dict[HookEvent, list[Hook]] = field(
        default_factory=lambda: {event: [] for event in _EVENTS}
    )

    def add(self, event: HookEvent, fn: HookT) -> HookT:
        """Register ``fn`` for ``event``; returns it (for use as a decorator)."""
        self.registered[event].append(fn)
        return fn

    async def run(
        self,
        event: HookEvent,
        log: FilteringBoundLogger,
        *,
        timeout: float | None,
        raise_errors: bool = False,
    ) -> list[str]:
        """Run the hooks of ``event`` in order, all within ``timeout``; return what failed.

        With ``raise_errors`` the first hook that raises ends the run with its exception.
        """
        errors: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                for hook in self.registered[event]:
                    name = getattr(hook, "__qualname__", repr(hook))
                    try:
                        result = hook()
                        if inspect.isawaitable(result):
                            await result
                    except Exception as exc:
                        if raise_errors:
                            raise
                        log.exception("hook failed", hook_event=event.value, hook=name)
                        errors.append(f"on_{event.value} hook {name} failed: {exc!r}")
        except TimeoutError:
            log.error("hooks timed out", hook_event=event.value, timeout=timeout)
            errors.append(f"on_{event.value} hooks did not finish within {timeout:g} s")
        return errors
