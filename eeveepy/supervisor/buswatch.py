"""The bus, supervised like an operator: the embedded nats-server is restarted when it dies.

:class:`BusWatch` waits on the server process (a pidfd on Linux, so no polling). When it exits
it is reaped at once and started again after a jittered backoff, on the same port, with the
same configuration, credentials and JetStream store, so clients reconnect to the same URL and
find their streams, KV buckets and consumers where they were. More than ``max_restarts`` exits
within ``window`` seconds is flapping: the watch gives up with a FATAL message and calls
``on_fatal`` (the supervisor then stops, since nothing works without the bus).

It also follows the supervisor's own bus connection (:meth:`disconnected`, :meth:`reconnected`
are nats-py's callbacks). While the connection is down, and for ``grace`` seconds after it is
back (operators reconnect on their own schedule), :meth:`settled` is False: the supervisor
then counts no missed pings and gives up no leases. Each outage is logged once when it starts
and once when it ends, never once per reconnect attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import deque
from collections.abc import Callable

from structlog.typing import FilteringBoundLogger

from eeveepy.aio import Backoff, cancel_and_wait
from eeveepy.bus.natsserver import EmbeddedNats
from eeveepy.errors import NatsServerError

__all__ = ["BusWatch"]


class BusWatch:
    """Restarts a dying embedded nats-server; says whether the bus is usable right now."""

    def __init__(
        self,
        server: EmbeddedNats | None,
        *,
        log: FilteringBoundLogger,
        on_fatal: Callable[[str], None],
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        max_restarts: int = 5,
        window: float = 60.0,
        healthy_after: float = 10.0,
        grace: float = 3.0,
    ) -> None:
        self.server = server
        self.max_restarts = max_restarts
        self.window = window
        self.healthy_after = healthy_after
        self.grace = grace
        self.restarts = 0
        """Times the server was started again after it died."""
        self.fatal: str | None = None
        """The FATAL message once the watch gave up, else None."""
        self._log = log
        self._on_fatal = on_fatal
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._exits: deque[float] = deque()
        self._connected = True
        self._changed = time.monotonic() - grace
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._down = asyncio.Event()

    # -- the supervisor's connection ---------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the supervisor's own bus connection is up."""
        return self._connected

    def settled(self) -> bool:
        """Connected for at least ``grace`` seconds: a missed ping or lease is meaningful."""
        return self._connected and time.monotonic() - self._changed >= self.grace

    async def disconnected(self) -> None:
        """nats-py's ``disconnected_cb``: the outage begins (logged once)."""
        if not self._connected or self._stopped:
            return
        self._connected = False
        self._down.set()
        self._changed = time.monotonic()
        self._log.warning(
            "bus connection lost: operators keep running; "
            "missed pings and lease renewals are not held against them until it is back"
        )

    async def reconnected(self) -> None:
        """nats-py's ``reconnected_cb``: the outage is over (logged once)."""
        down = time.monotonic() - self._changed
        self._connected = True
        self._down.clear()
        self._changed = time.monotonic()
        self._log.warning("bus connection back", down_s=round(down, 3))

    # -- the server process ------------------------------------------------------------------

    def start(self) -> None:
        """Watch the embedded server (nothing to watch on an external bus)."""
        if self.server is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="bus-watch")

    async def stop(self) -> None:
        """Stop watching (before the bus is closed on purpose). Idempotent."""
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def _watch(self) -> None:
        server = self.server
        assert server is not None
        started = time.monotonic()
        while True:
            code = await server.wait()
            # The supervisor's connection sees the death too (EOF). Once it has, what is logged
            # here waits in its buffer for the new server rather than going to the dead socket.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._down.wait(), 1.0)
            now = time.monotonic()
            if now - started >= self.healthy_after:
                self._backoff.reset()
            self._exits.append(now)
            while self._exits and now - self._exits[0] > self.window:
                self._exits.popleft()
            how = _describe(code)
            if len(self._exits) > self.max_restarts:
                self.fatal = (
                    f"FATAL: the embedded nats-server keeps dying ({len(self._exits)} exits in"
                    f" {self.window:g} s, last: {how}); giving up and stopping eevee up."
                    f" Its log: {server.log_path}"
                )
                self._log.critical(self.fatal)
                self._on_fatal(self.fatal)
                return
            delay = self._backoff.next()
            self._log.error(
                f"the embedded nats-server {how}: restarting it in {delay:.2f} s",
                log=str(server.log_path),
            )
            await asyncio.sleep(delay)
            started = time.monotonic()
            try:
                await server.restart()
            except NatsServerError as exc:
                self._log.error("the embedded nats-server did not restart", error=str(exc))
                continue  # wait() returns at once: counted as one more exit
            self.restarts += 1
            self._log.warning("the embedded nats-server is back", pid=server.pid, url=server.url)


def _describe(code: int | None) -> str:
    if code is None:
        return "did not start"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
