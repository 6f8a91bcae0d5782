"""The connector kit's runner: a :class:`Platform` made into a connector operator.

:func:`connector_operator` builds the :class:`~eeveepy.Operator` and its hooks. The
:class:`Connector` then owns, for every platform alike:

- the sessions: one at a time in a background task (the operator answers pings while the
  platform is away), restarted after each end with jittered exponential backoff
  (:func:`~eeveepy.connector.reconnect.reconnect_delay`), reset after a healthy session,
  slow after refused credentials;
- the bus side: ``chat.out`` through the :class:`~eeveepy.connector.outbox.Outbox` into the
  :class:`~eeveepy.connector.egress.Egress` pump, ``chat.ctl`` through the
  :class:`~eeveepy.connector.desk.ControlDesk`, both moved when the network changes;
- the rooms wanted, joined again after every reconnect;
- reloads: live where the platform allows it, a new session where a ``session_fields``
  setting or the network changed;
- a goodbye at stop, bounded by :data:`GOODBYE_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Final, Generic, TypeVar

from pydantic import BaseModel

from eeveepy.aio import Backoff, cancel_and_wait
from eeveepy.connector.control import ControlRequest, RoomAction, check_actions
from eeveepy.connector.desk import ControlDesk
from eeveepy.connector.egress import Egress
from eeveepy.connector.link import Link, Rooms
from eeveepy.connector.outbox import Outbox
from eeveepy.connector.platform import Plan, Platform, ReconnectPolicy, session_changes
from eeveepy.connector.reconnect import reconnect_delay
from eeveepy.connector.state import ConnectionState
from eeveepy.errors import AuthenticationError, EeveeError, RefusedError
from eeveepy.protocol.codec import dead_letter, dump_model
from eeveepy.protocol.models import Envelope, OutgoingMessage
from eeveepy.runtime.operator import Operator

S = TypeVar("S", bound=BaseModel)

GOODBYE_TIMEOUT: Final = 0.5
"""Seconds the platform's goodbye may take at stop (the whole stop has 1.5 s)."""


class Connector(Generic[S]):
    """The kit's side of one connector operator: everything but the platform."""

    def __init__(
        self, op: Operator[S], platform: Platform[S], *, jitter: Callable[[], float] = random.random
    ) -> None:
        self.op = op
        self.platform = platform
        check_actions(platform.name, platform.actions)  # fail at build time, not at a request
        self.link = Link(op, platform.name, platform.fold)
        self.link.on_change = self._on_change
        self.egress = Egress(
            platform.send,
            self.link.tracker.up,
            op.log,
            fold=platform.fold,
            send_now=getattr(platform, "send_now", None),  # (a platform that only matches)
        )
        self.link.put = self.egress.put
        self.outbox = Outbox(op, self._out)
        self.desk = ControlDesk(platform, self.link)
        self.backoff = Backoff(1.0, 60.0, jitter)
        self._settings: S | None = None
        self._plan = Plan(network="")
        self._run_task: asyncio.Task[None] | None = None

    @property
    def network(self) -> str:
        """The network served (known once started)."""
        return self.link.network

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Take the bus side of the network and start the first session in the background."""
        settings = self.op.settings
        plan = self.platform.plan(settings, self.op.id)
        self._apply(settings, plan)
        self.link.rooms.reset(plan.rooms)
        await self._open(plan.network)
        self.egress.start()
        self._start_session()
        self.op.log.info("connector started", platform=self.platform.name, network=plan.network)

    async def stop(self) -> None:
        """Say goodbye (bounded) and stop; the bus is drained already, nothing is published."""
        await self.outbox.close()  # what was not sent yet is delivered again at next start
        await self.desk.close()
        if self.link.connected:
            try:
                async with asyncio.timeout(GOODBYE_TIMEOUT):
                    await self.platform.goodbye()
            except (TimeoutError, OSError, EeveeError) as exc:
                self.op.log.debug("no goodbye", error=repr(exc))
        await self._end_session()
        await self.egress.stop()
        await self.link.close()

    async def reload(self) -> None:
        """Apply new settings: live where possible, with a new session where needed."""
        old, new = self._settings, self.op.settings
        plan = self.platform.plan(new, self.op.id)
        old_plan = self._plan
        self._apply(new, plan)
        renew = session_changes(old, new, self.platform.session_fields) if old else set()
        if plan.network != self.network or renew:
            self.op.log.info(
                "settings changed: new session", changed=sorted(renew), network=plan.network
            )
            await self._end_session("reconnecting with new settings")
            if plan.network != self.network:
                self.egress.clear()
                await self._open(plan.network)
            self.link.rooms.reset(plan.rooms)
            self._start_session()
            return
        before = Rooms(self.platform.fold)
        before.reset(old_plan.rooms)
        added, removed = before.diff(plan.rooms)
        for room in added:
            self.link.rooms.want(room)
        for room in removed:
            self.link.rooms.drop(room.name)
        if self.link.connected and added:
            self.desk.spawn(self.platform.join(added), name="join")
        for room in removed:
            part = ControlRequest(RoomAction.PART, wire="part", room=room.name, reason="leaving")
            self.desk.request(part)

    def _apply(self, settings: S, plan: Plan) -> None:
        self._settings, self._plan = settings, plan
        self.egress.retune(plan.egress)
        self._retune_backoff(plan.reconnect)

    def _retune_backoff(self, policy: ReconnectPolicy) -> None:
        self.backoff.initial, self.backoff.maximum = policy.initial, policy.maximum

    async def _open(self, network: str) -> None:
        """Serve ``network`` on the bus: its ``chat.out`` and ``chat.ctl``."""
        self.link.open(network)
        await self.outbox.open(self.platform.name, network)
        await self.desk.open()

    # -- sessions ----------------------------------------------------------------------------

    def _start_session(self) -> None:
        self._run_task = asyncio.get_running_loop().create_task(self._run(), name="session")

    async def _end_session(self, why: str = "") -> None:
        task, self._run_task = self._run_task, None
        if task is not None:
            await cancel_and_wait(task, timeout=1.0)
        if why:
            self.link.state(ConnectionState.DISCONNECTED, why)

    async def _run(self) -> None:
        """Sessions, one after the other, for as long as the connector runs."""
        link, log = self.link, self.op.log
        while True:
            settings = self._settings
            assert settings is not None  # set by start()
            link.state(ConnectionState.CONNECTING)
            auth_failed = False
            try:
                await self.platform.session(settings, link)
                reason = "connection closed"
            except AuthenticationError as exc:
                reason, auth_failed = str(exc), True
            except (OSError, TimeoutError, EeveeError, ValueError) as exc:
                reason = str(exc) or type(exc).__name__
            except Exception as exc:  # a bug: log it, keep the connector alive
                log.exception("session crashed", error=repr(exc))
                reason = f"internal error: {exc!r}"
            policy = self._plan.reconnect
            delay = reconnect_delay(
                self.backoff,
                healthy=link.tracker.uptime() >= policy.healthy,
                auth_failed=auth_failed,
                auth_floor=policy.auth_floor,
            )
            state = ConnectionState.AUTH_FAILED if auth_failed else ConnectionState.DISCONNECTED
            link.state(state, reason)
            log.warning(
                "disconnected: reconnecting",
                network=link.network,
                reason=reason,
                delay=round(delay, 3),
                attempt=self.backoff.attempt,
            )
            await asyncio.sleep(delay)

    def _on_change(self, state: ConnectionState) -> None:
        rooms = list(self.link.rooms)
        if state is ConnectionState.CONNECTED and rooms:
            self.desk.spawn(self.platform.join(rooms), name="rejoin")

    # -- outgoing ----------------------------------------------------------------------------

    def _out(
        self, env: Envelope[OutgoingMessage], on_sent: Callable[[], None]
    ) -> asyncio.Future[None]:
        """Render and queue a message (or send it at once: :meth:`Egress.put_message`); the
        result completes once its last piece was sent (or dropped). ``on_sent`` is called as
        soon as it is (see :class:`Outbox`)."""
        try:
            items = self.platform.render(env.body)
        except RefusedError as exc:
            on_sent()  # done with: never to be tried again
            return asyncio.ensure_future(self._refuse_out(env, str(exc)))
        if not items:
            self.op.log.debug("nothing to send", target=env.body.target)
        return self.egress.put_message(items, on_sent)

    async def _refuse_out(self, env: Envelope[OutgoingMessage], reason: str) -> None:
        """Log a ``chat.out`` that must not be sent and dead-letter it for its sender to see."""
        subject = self.op.subjects.chat_out(self.platform.name, self.network)
        self.op.log.warning("refusing to send", target=env.body.target, reason=reason)
        try:
            letter = dead_letter(subject, reason, self.op.id, dump_model(env))
            await self.op.ipc.publish(self.op.subjects.dlq(subject), letter)
        except EeveeError as exc:
            self.op.log.error("could not publish dead letter", subject=subject, error=str(exc))


def connector_operator(
    platform: Platform[S],
    settings: type[S],
    *,
    name: str,
    jitter: Callable[[], float] = random.random,
) -> Operator[S]:
    """The operator of a connector for ``platform`` (nothing runs until ``run()``/``serve()``).

    Its :class:`Connector` is ``op.extensions[Connector]``. ``jitter`` returns a number in
    ``[0, 1)`` that spreads reconnect delays (tests pass a constant).
    """
    op = Operator(settings, name=name)
    connector = Connector(op, platform, jitter=jitter)
    op.extensions[Connector] = connector
    op.on_start(connector.start)
    op.on_reload(connector.reload)
    op.on_stop(connector.stop)
    return op
