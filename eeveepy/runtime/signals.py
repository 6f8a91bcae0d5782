"""The signals an operator process answers, installed for one serve and then restored.

SIGTERM and SIGINT ask for a graceful stop (a second one forces it), SIGHUP for a reload.
Handlers go on the running event loop, which only works in the main thread: elsewhere (an
operator served by a test in a thread) they are not installed, and that is said at debug
level. Whatever was installed before is put back when the serve ends.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no stub: signal's C half, without the enums
import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

from structlog.typing import FilteringBoundLogger

__all__ = ["capture_signals"]


@contextlib.contextmanager
def capture_signals(
    loop: asyncio.AbstractEventLoop,
    *,
    stop: Callable[[], None],
    reload: Callable[[], None],
    log: FilteringBoundLogger,
) -> Iterator[None]:
    """Within the block, SIGTERM/SIGINT call ``stop`` and SIGHUP calls ``reload``."""
    handlers: list[tuple[int, Callable[[], None]]] = [
        (signal.SIGTERM, stop),
        (signal.SIGINT, stop),
    ]
    if hasattr(signal, "SIGHUP"):
        handlers.append((signal.SIGHUP, reload))
    installed: list[tuple[int, Any]] = []
    try:
        for sig, callback in handlers:
            # signal.getsignal converts to its enum, which fails for a function and formats
            # the handler's repr (asyncio's: its loop, task and all) into an error first.
            previous = _signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, callback)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                log.debug("signal handlers not installed", signal=sig)
                continue
            installed.append((sig, previous))
        yield
    finally:
        for sig, previous in installed:
            loop.remove_signal_handler(sig)
            if previous is not None:
                with contextlib.suppress(ValueError, TypeError, OSError):
                    signal.signal(sig, previous)
