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

And it keeps JetStream on. After a write error (disk full, store not writable) nats-server
disables JetStream and keeps it off until its configuration is reloaded: every key-value write
(operators' stores, leases), stored chat and the log history fail meanwhile. The watch reads the
server's ``/jsz`` every ``jetstream_interval`` seconds; once it says ``disabled``, the watch logs
it once at error level (with what to do), shows it in :attr:`warnings` (``eevee ps``), and
reloads the server's configuration (:meth:`EmbeddedNats.reload`) with a backoff of
``jetstream_backoff_initial`` doubling up to ``jetstream_backoff_max`` seconds until ``/jsz``
says JetStream is on again. Then it logs that at warning level and ensures the supervisor's
streams (:meth:`keep_streams`: the log history and both chat streams, created again if the store
lost them); the operators' stores retry their writes on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from nats.js.client import JetStreamContext
from structlog.typing import FilteringBoundLogger

from eeveepy.aio import Backoff, cancel_and_wait
from eeveepy.bus.natsserver import EmbeddedNats
from eeveepy.bus.streams import ensure_chat_streams
from eeveepy.config import Config
from eeveepy.errors import BusError, NatsServerError
from eeveepy.logs import ensure_log_stream

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
        jetstream_interval: float = 1.0,
        jetstream_backoff_initial: float = 2.0,
        jetstream_backoff_max: float = 30.0,
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
        self.jetstream_interval = jetstream_interval
        self.jetstream_off: str | None = None
        """What is wrong while the server has JetStream disabled, else None."""
        self.jetstream_reenabled = 0
        """Times JetStream was turned back on after the server disabled it."""
        self._js_backoff = Backoff(jetstream_backoff_initial, jetstream_backoff_max)
        self._js_on_since = time.monotonic()
        self._streams: tuple[JetStreamContext, Config] | None = None
        self._js_task: asyncio.Task[None] | None = None
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

    @property
    def warnings(self) -> list[str]:
        """What is wrong with the bus right now (``eevee ps`` shows it)."""
        return [self.jetstream_off] if self.jetstream_off else []

    def keep_streams(self, js: JetStreamContext, config: Config) -> None:
        """The streams to ensure once JetStream is back: log history and chat of ``config``."""
        self._streams = (js, config)

    def start(self) -> None:
        """Watch the embedded server (nothing to watch on an external bus)."""
        if self.server is not None and self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._watch(), name="bus-watch")
            if self.server.jetstream:
                self._js_task = loop.create_task(self._watch_jetstream(), name="jetstream-watch")

    async def stop(self) -> None:
        """Stop watching (before the bus is closed on purpose). Idempotent."""
        self._stopped = True
        tasks, self._task, self._js_task = (self._task, self._js_task), None, None
        for task in tasks:
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

    # -- JetStream ---------------------------------------------------------------------------

    async def _jetstream_on(self, server: EmbeddedNats) -> bool | None:
        """Whether the server has JetStream on; None when it does not say (dead, restarting)."""
        try:
            jsz = await server.monitor("jsz", 2.0)
        except NatsServerError:
            return None
        return not jsz.get("disabled", False)

    async def _watch_jetstream(self) -> None:
        server = self.server
        assert server is not None
        while True:
            await asyncio.sleep(self.jetstream_interval)
            if await self._jetstream_on(server) is False:
                await self._reenable(server)

    async def _reenable(self, server: EmbeddedNats) -> None:
        """Reload the configuration with backoff until JetStream is on; say so, once each."""
        began = time.monotonic()
        if began - self._js_on_since >= self.healthy_after:
            self._js_backoff.reset()  # (not when it was disabled again right after a reload)
        store = server.store_dir / "jetstream"
        cause = await asyncio.to_thread(_jetstream_cause, server.log_path)
        since = datetime.now().astimezone().strftime("%H:%M:%S")
        todo = f"free space on its disk or make {store} writable"
        self.jetstream_off = (
            f"JetStream disabled on the embedded nats-server since {since} ({cause}): key-value"
            f" writes, leases, stored chat and the log history fail; {todo}."
            " eevee up re-enables it by itself"
        )
        self._log.error(
            f"JetStream is disabled on the embedded nats-server ({cause}): key-value writes"
            " (operators' stores, leases), stored chat and the log history fail until it is"
            f" back; {todo}. eevee up reloads the server's configuration to re-enable it,"
            f" every {self._js_backoff.initial:g} s to {self._js_backoff.maximum:g} s",
            log=str(server.log_path),
        )
        tries = 0
        said = False
        while True:
            tries += 1
            try:
                await server.reload()
            except NatsServerError as exc:  # e.g. its configuration cannot be written either
                if server.running and not said:
                    said = True
                    self._log.warning(
                        "cannot reload the nats-server configuration to re-enable JetStream;"
                        " trying again",
                        error=str(exc),
                    )
            if await self._jetstream_on(server):
                break
            await asyncio.sleep(self._js_backoff.next())
        self._js_on_since = time.monotonic()
        self.jetstream_off = None
        self._log.warning(
            "JetStream is back on the embedded nats-server",
            off_s=round(self._js_on_since - began, 3),
            reloads=tries,
        )
        problems = await self._ensure_streams()
        if problems:
            self._log.error("JetStream is back, but streams are missing", errors=problems)
        self.jetstream_reenabled += 1  # (counted once the streams are ensured too)

    async def _ensure_streams(self) -> list[str]:
        """Ensure the streams of :meth:`keep_streams`; what failed."""
        if self._streams is None:
            return []
        js, config = self._streams
        sup = config.supervisor
        problems: list[str] = []
        try:
            max_age, max_bytes = sup.log_history_max_age, sup.log_history_max_bytes
            await ensure_log_stream(
                js,
                config.prefix,
                max_age=max_age,
                max_bytes=max_bytes,
                replicas=config.bus.replicas,
            )
        except BusError as exc:
            problems.append(f"log history: {exc}")
        try:
            await ensure_chat_streams(js, config.prefix, replicas=config.bus.replicas)
        except BusError as exc:
            problems.append(f"chat: {exc}")
        return problems


_JS_DISABLED_RE = re.compile(r"^\[\d+\] \S+ \S+ \[(?:ERR|WRN)\] (.*disabl.*)$", re.I | re.M)
_LOG_TAIL = 64 * 1024


def _jetstream_cause(log_path: Path) -> str:
    """The server's last word on why it disabled JetStream (from the end of its log)."""
    try:
        with log_path.open("rb") as f:
            f.seek(max(0, f.seek(0, 2) - _LOG_TAIL))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        tail = ""
    said = _JS_DISABLED_RE.findall(tail)
    return said[-1].strip() if said else "after a failed write to its store"


def _describe(code: int | None) -> str:
    if code is None:
        return "did not start"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
