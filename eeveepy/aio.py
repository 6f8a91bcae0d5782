"""Task and process helpers used across the library: one of each.

- :func:`cancel_and_wait`: cancel a task and wait, bounded, until it has really ended.
- :class:`Backoff`: exponential backoff with jitter, reset after a healthy period.
- :func:`die_with_parent`: a ``preexec_fn`` tying a child's life to its parent's (Linux).
- :func:`run`: ``asyncio.run`` on uvloop where it is installed (``EEVEE_LOOP`` chooses).
- :func:`running_loop`: the running event loop, without a system call when it is known.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from eeveepy.errors import OperatorError

T = TypeVar("T")

ENV_LOOP: Final = "EEVEE_LOOP"
"""The event loop of an operator process: ``auto`` (the default: uvloop where it is installed,
else asyncio's own), ``uvloop`` (an error without it) or ``asyncio``."""
LOOPS: Final = ("auto", "uvloop", "asyncio")

_PR_SET_PDEATHSIG = 1


def running_loop(known: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    """The running event loop: ``known`` when it is the one running, else looked up.

    For the per-message paths: ``asyncio.get_running_loop()`` makes a ``getpid()`` system
    call each time on Python 3.11. Call it from a coroutine or a callback of the loop only.
    """
    if known is not None and known.is_running():
        return known
    return asyncio.get_running_loop()


async def cancel_and_wait(task: asyncio.Future[Any], timeout: float = 5.0) -> None:
    """Cancel ``task`` and wait (bounded) until it has ended.

    One ``cancel()`` is not enough on Python 3.11: ``asyncio.wait_for`` swallows a
    cancellation that arrives just as the future it awaits completes (fixed in 3.12), and the
    task then goes on, e.g. into its next ``await`` forever. So cancel again until it ends.
    """
    deadline = time.monotonic() + timeout
    while not task.done() and time.monotonic() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: a failure while stopping is not worth a warning


class Backoff:
    """Exponential backoff with jitter: ``initial`` doubling (or growing by ``factor``) up to
    ``maximum``.

    Each delay is between half and all of the current step (so that many clients restarted
    together do not come back together); :meth:`reset` starts again from ``initial``, e.g.
    after a healthy period.
    """

    def __init__(
        self,
        initial: float,
        maximum: float,
        rnd: Callable[[], float] = random.random,
        *,
        factor: float = 2.0,
    ) -> None:
        if factor < 1.0:
            raise ValueError(f"a backoff factor below 1 ({factor}) would shrink the delays")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.attempt = 0
        self._rnd = rnd

    def next(self) -> float:
        """The next delay, in seconds."""
        # The exponent is capped: 2.0 ** 1024 overflows, and 2 ** 62 is past any maximum.
        # (A factor of 1.5 needs ~1750 steps to overflow: the cap is past any maximum too.)
        try:
            grown = self.initial * (self.factor ** min(self.attempt, 62))
        except OverflowError:
            grown = self.maximum
        step = min(self.maximum, grown)
        self.attempt += 1
        return float(step * (0.5 + 0.5 * self._rnd()))

    def reset(self) -> None:
        """Start again from ``initial``."""
        self.attempt = 0


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` after which the child gets ``sig`` when its parent dies (Linux).

    libc is loaded here, in the parent, so the child only makes the ``prctl`` call. The death
    signal fires when the *thread* that forked the child exits: fork from a long-lived thread
    (the event loop's), never from a short-lived worker thread. None where not supported.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def loop_factory(choice: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory ``choice`` (default: ``$EEVEE_LOOP``, else ``auto``) names;
    None for asyncio's own loop. Raises :class:`OperatorError` for a choice it cannot honour."""
    choice = (choice if choice is not None else os.environ.get(ENV_LOOP, "")) or "auto"
    if choice not in LOOPS:
        raise OperatorError(f"{ENV_LOOP}={choice!r}: give one of {', '.join(LOOPS)}")
    if choice == "asyncio":
        return None
    try:
        import uvloop  # optional: imported only where it is asked for
    except ImportError:
        if choice == "uvloop":
            raise OperatorError(
                f"{ENV_LOOP}=uvloop but uvloop is not installed (pip install uvloop)"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], factory: Callable[[], asyncio.AbstractEventLoop] | None) -> T:
    """``asyncio.run(main)`` on a loop from ``factory`` (None: asyncio's own); see
    :func:`loop_factory`: uvloop makes each message's trip through a process cheaper."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
