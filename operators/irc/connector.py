"""The IRC connector: its lifecycle on the bus, reconnects, egress and reloads.

:class:`IrcConnector` keeps what outlives one connection (:class:`~operators.irc.session.
IrcSession`): the reconnect loop (jittered backoff, reset after a healthy period, slow after a
SASL failure), the rooms wanted, the egress queue (:class:`~operators.irc.egress.Egress`), the
``chat.out`` outbox and the ``chat.ctl`` subscription (:class:`~operators.irc.control.
IrcControl`), and applies a reload live or with a new connection
(:data:`~operators.irc.settings.SESSION_FIELDS`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Final

from structlog.typing import FilteringBoundLogger

from eeveepy import Operator
from eeveepy.aio import Backoff, cancel_and_wait
from eeveepy.bus.ipc import Subscription
from eeveepy.connector.outbox import Outbox
from eeveepy.errors import EeveeError, InvalidTargetError, SaslFailedError
from eeveepy.protocol.models import Envelope, OutgoingMessage
from operators.irc.control import IrcControl
from operators.irc.egress import Egress, TokenBucket
from operators.irc.link import BusLink
from operators.irc.protocol import IrcProtocol
from operators.irc.session import IrcSession
from operators.irc.settings import (
    SESSION_FIELDS,
    Channel,
    IrcSettings,
    changed_fields,
    network_name,
)
from operators.irc.state import ServerState
from operators.irc.translate import PLATFORM, render

__all__ = ["IrcConnector", "backoff_delay", "create", "main"]

MAX_DOUBLINGS: Final = 30
"""Backoff steps counted at most (``reconnect_max`` is reached long before)."""
AUTH_FAILURE_STEPS: Final = 3
"""Backoff steps a SASL failure jumps to at least: retries start at 8x ``reconnect_min``."""


def reconnect_delay(backoff: Backoff, *, healthy: bool = False, auth_failed: bool = False) -> float:
    """The delay before the next connection attempt, never shorter than ``backoff.initial``
    (``reconnect_min``).

    ``healthy``: the connection that ended had been registered for a while, so this outage is
    a new one (the backoff starts again). ``auth_failed``: wrong credentials do not fix
    themselves, so retry slowly and never hammer the server (which may ban the host).
    """
    if healthy:
        backoff.reset()
    if auth_failed:
        backoff.attempt = max(backoff.attempt, AUTH_FAILURE_STEPS)
    # Backoff multiplies a float by 2**attempt: bounded, a long outage cannot overflow it.
    backoff.attempt = min(backoff.attempt, MAX_DOUBLINGS)
    return max(backoff.initial, backoff.next())


def backoff_delay(attempt: int, low: float, high: float, rnd: Callable[[], float]) -> float:
    """Delay before reconnect ``attempt`` (0-based): exponential, jittered, in ``[low, high]``."""
    backoff = Backoff(low, high, rnd)
    backoff.attempt = attempt
    return reconnect_delay(backoff)


class IrcConnector:
    """The connector's state and handlers, bound to its :class:`Operator`."""

    def __init__(self, op: Operator[IrcSettings]) -> None:
        self.op = op
        self.network = ""
        self.wanted: dict[str, Channel] = {}
        """Channels to be in, by lower-cased name: joined again after every reconnect."""
        self.link = BusLink(op)
        self.outbox = Outbox(op, self._out)
        self.control = IrcControl(self)
        # Made at start, from the first settings:
        self.session: IrcSession
        self.egress: Egress
        self._rnd = random.Random()
        self._subs: list[Subscription] = []
        self._run_task: asyncio.Task[None] | None = None
        self._egress_task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def settings(self) -> IrcSettings:
        """The settings the current connection uses."""
        return self.session.proto.settings

    @property
    def state(self) -> ServerState:
        """What the client knows about the server and itself."""
        return self.session.state

    @property
    def log(self) -> FilteringBoundLogger:
        """The operator's logger."""
        return self.op.log

    @property
    def connected(self) -> bool:
        """Registered with the server (001 received) and not disconnected since."""
        return self.session.connected

    async def send(self, command: str, *params: str) -> bool:
        """Write one line now (bypassing flood control); False when not connected."""
        return await self.session.send(command, *params)

    def _wanted_from(self, s: IrcSettings) -> dict[str, Channel]:
        return {self.state.lower(c.name): c for c in s.channels}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe and start the connection in the background (never waits for IRC)."""
        s = self.op.settings
        self.session = session = IrcSession(
            self.op,
            IrcProtocol(s),
            self.link,
            queue=lambda line: self.egress.put(line),
            wanted=lambda: self.wanted.values(),
        )
        self.egress = Egress(
            session.write, session.registered, session.state.lower, lambda: self.op.log
        )
        self.egress.bucket = _bucket(s)
        self.network = self.link.network = network_name(s, self.op.id)
        self.wanted = self._wanted_from(s)
        await self._subscribe()
        self._egress_task = asyncio.create_task(self.egress.run(), name="irc-egress")
        self._run_task = asyncio.create_task(self._run(), name="irc-connection")
        self.log.info("irc connector started", network=self.network, host=s.host, port=s.port)

    async def _subscribe(self) -> None:
        await self.outbox.open(PLATFORM, self.network)
        ctl = self.op.subjects.chat_ctl(PLATFORM, self.network)
        self._subs = [await self.op.ipc.subscribe(ctl, self.control.serve)]

    async def stop(self) -> None:
        """Say goodbye to the server and stop the tasks (the bus is already drained)."""
        self._stopping = True
        await self.outbox.close()  # what was not written yet is delivered again at next start
        try:
            await asyncio.wait_for(self.send("QUIT", "shutting down"), 0.5)
        except TimeoutError:
            pass  # the server is slow to take it: leave without a goodbye
        for task in (self._run_task, self._egress_task):
            if task is not None:
                await cancel_and_wait(task)
        self._run_task = self._egress_task = None

    async def reload(self) -> None:
        """Apply new settings: live where possible, with a new connection where needed."""
        old, new = self.settings, self.op.settings
        self.session.proto.settings = new
        self.egress.bucket = _bucket(new)
        network = network_name(new, self.op.id)
        changed = changed_fields(old, new)
        if network != self.network or changed & SESSION_FIELDS:
            self.log.info("irc settings changed: reconnecting", changed=sorted(changed))
            if self._run_task is not None:
                await cancel_and_wait(self._run_task)
            await self.session.report_disconnected("reconnecting with new settings")
            if network != self.network:
                for sub in self._subs:
                    await sub.unsubscribe()
                self.network = self.link.network = network
                self.egress.clear()
                await self._subscribe()
            self.state.want_nick = new.nick
            self.wanted = self._wanted_from(new)
            self._run_task = asyncio.create_task(self._run(), name="irc-connection")
            return
        if old.channels != new.channels:
            wanted = self._wanted_from(new)
            if self.connected:
                for key, chan in wanted.items():
                    if key not in self.state.joined:
                        await self.send("JOIN", chan.name, *([chan.key] if chan.key else []))
                for key in set(self.wanted) - set(wanted):
                    if key in self.state.joined:
                        await self.send("PART", self.wanted[key].name, "leaving")
            self.wanted = wanted

    async def _run(self) -> None:
        """Connect, and reconnect after every disconnect, until stopped."""
        session = self.session
        backoff = Backoff(
            self.settings.reconnect_min, self.settings.reconnect_max, self._rnd.random
        )
        while not self._stopping:
            s = self.settings
            auth_failed = False
            try:
                await session.run(s)
                reason = "connection closed by the server"
            except SaslFailedError as exc:
                reason = str(exc)
                auth_failed = True
            except asyncio.CancelledError:
                await session.close()
                raise
            except (OSError, TimeoutError, EeveeError, ValueError) as exc:
                reason = str(exc) or type(exc).__name__
            except Exception as exc:  # a bug: log it, keep the connector alive
                self.log.exception("irc connection crashed", error=repr(exc))
                reason = f"internal error: {exc!r}"
            since = session.registered_at
            registered_for = None if since is None else time.monotonic() - since
            await session.close()
            if self._stopping:
                return
            await session.report_disconnected(reason)
            backoff.initial, backoff.maximum = s.reconnect_min, s.reconnect_max
            healthy = registered_for is not None and registered_for >= 10 * s.reconnect_min
            delay = reconnect_delay(backoff, healthy=healthy, auth_failed=auth_failed)
            self.log.warning(
                "irc disconnected: reconnecting",
                network=self.network,
                reason=reason,
                delay=round(delay, 2),
                attempt=backoff.attempt,
            )
            await asyncio.sleep(delay)

    async def _out(self, env: Envelope[OutgoingMessage]) -> None:
        """Queue an outgoing message (:func:`~operators.irc.translate.render`); return once
        its last line was written (the :class:`Outbox` then acknowledges it). A message to an
        invalid target is dead-lettered."""
        try:
            lines = render(env.body, self.state)
        except InvalidTargetError as exc:
            await self.link.refuse(env, exc)
            return
        if not lines:
            self.log.debug("irc: nothing to send (empty text)", target=env.body.target)
            return
        await self.egress.put_all(lines)


def _bucket(s: IrcSettings) -> TokenBucket:
    return TokenBucket(s.egress_lines, s.egress_period, s.egress_burst)


def create() -> Operator[IrcSettings]:
    """Build the IRC operator (nothing runs until ``run()`` or ``serve()``)."""
    op = Operator(IrcSettings, name="irc")
    connector = IrcConnector(op)
    op.on_start(connector.start)
    op.on_reload(connector.reload)
    op.on_stop(connector.stop)
    return op


def main() -> None:
    """Run the IRC operator as a process."""
    create().run()
