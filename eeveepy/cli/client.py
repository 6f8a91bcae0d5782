"""How the ``eevee`` CLI reaches the running supervisor: its state file, then its bus.

The embedded bus may be restarting (the supervisor restarts a nats-server that died, on the
same URL): when the supervisor of the state file is alive but its bus refuses connections,
:func:`connect_cli` tries again for a few seconds before it says the bus is down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from nats.aio.client import Client as NatsClient

from eeveepy.bus.client import BusConfig, connect
from eeveepy.bus.ipc import Ipc
from eeveepy.errors import BusDownError, BusError, NoRespondersError
from eeveepy.paths import Paths
from eeveepy.protocol.models import Body, Envelope
from eeveepy.protocol.subjects import Subjects
from eeveepy.supervisor.core import SUPERVISOR_HEADER, read_state

__all__ = ["BUS_WAIT", "ask_supervisor", "connect_cli"]

B = TypeVar("B", bound=Body)

BUS_WAIT = 5.0
"""Seconds the CLI waits for a bus that refuses connections while its supervisor runs."""


async def connect_cli(
    paths: Paths, *, wait: float = BUS_WAIT, note: Callable[[str], None] | None = None
) -> tuple[NatsClient, Ipc, dict[str, str]]:
    """Connect with the CLI's credentials; also the headers addressing that supervisor.

    Several supervisors may share the bus and prefix, and only the one in the state file
    must answer. Raises :class:`~eeveepy.errors.SupervisorError` when none runs, and
    :class:`BusDownError` when its bus does not come back within ``wait`` seconds (``note``
    is told once that the CLI is waiting).
    """
    state = read_state(paths)
    deadline = time.monotonic() + wait
    waiting = False
    while True:
        try:
            nc = await _connect(state)
            break
        except BusError as exc:
            state = read_state(paths)  # the supervisor is gone: say that instead
            if time.monotonic() >= deadline:
                raise BusDownError(
                    f"eevee (pid {state['pid']}) is running but its bus at {state['url']} does"
                    f" not answer ({exc}); it restarts an embedded bus by itself: try again in"
                    " a few seconds, and if it stays down, see the output of `eevee up`"
                ) from None
            if not waiting and note is not None:
                note(f"the bus at {state['url']} does not answer; waiting up to {wait:g} s")
            waiting = True
            await asyncio.sleep(0.2)
    ipc = Ipc(Subjects(state.get("prefix") or "eevee"), "cli")
    await ipc.attach(nc)
    to = {SUPERVISOR_HEADER: state["supervisor"]} if state.get("supervisor") else {}
    return nc, ipc, to


async def _connect(state: dict[str, Any]) -> NatsClient:
    # An external bus's TLS and login files (paths), as the supervisor uses them.
    files = state.get("bus") or {}
    return await connect(
        BusConfig(connect_timeout=3, **files),
        name="eevee-cli",
        url=state["url"],
        user=state.get("user"),
        password=state.get("password"),
        reconnect=False,
    )


async def ask_supervisor(
    ipc: Ipc,
    what: str,
    body: Body,
    reply: type[B],
    *,
    timeout: float,
    headers: dict[str, str],
    wait: float = BUS_WAIT,
) -> B:
    """Request ``{p}.supervisor.<what>`` and return the reply's body.

    Right after the bus came back the supervisor may not have reconnected yet: "no responders"
    (nobody got the request, so asking again is safe) is retried for up to ``wait`` seconds.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            env: Envelope[B] = await ipc.request(
                ipc.subjects.supervisor(what), body, reply, timeout=timeout, headers=headers
            )
            return env.body
        except NoRespondersError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.1)
