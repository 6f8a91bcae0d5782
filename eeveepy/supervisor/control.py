"""``supervisor.status`` and ``supervisor.ctl``: the requests the supervisor answers.

Every supervisor on the bus with the same prefix receives them; each answers only the ones
addressed to it by the :data:`SUPERVISOR_HEADER` header (the CLI takes the name from the state
file), or to none in particular. Lifecycle actions on operators are applied here, then waited
for (bounded) until the operators have settled, so the reply shows where they ended up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from eeveepy.bus.ipc import Ipc
from eeveepy.errors import EeveeError
from eeveepy.protocol.models import (
    Control,
    ControlAction,
    ControlResult,
    Envelope,
    Ping,
    Ready,
    SupervisorStatus,
)
from eeveepy.supervisor.process import OperatorProcess
from eeveepy.supervisor.states import RESTING, ProcessState

__all__ = [
    "PROBE_TIMEOUT",
    "SETTLE_TIMEOUT",
    "SUPERVISOR_HEADER",
    "apply",
    "probe",
    "serve_requests",
    "settle",
]

SUPERVISOR_HEADER = "supervisor"
"""Header naming the supervisor a status/ctl request is for (from the state file)."""
PROBE_TIMEOUT = 1.0
"""Seconds :func:`probe` waits for a supervisor's answer."""
SETTLE_TIMEOUT = 10.0
"""Seconds a ctl request waits at most for its operators to settle."""
_GRACE = 0.05
"""Seconds an operator's lifecycle gets to take up a request before its state is trusted."""


async def serve_requests(
    ipc: Ipc,
    name: str,
    *,
    status: Callable[[], SupervisorStatus],
    control: Callable[[ControlAction, str], Awaitable[ControlResult]],
    ready: Callable[[str, int], None],
) -> None:
    """Answer status and ctl requests for supervisor ``name``; pass ``operator.ready`` on."""

    def for_me(env: Envelope[Any]) -> bool:
        return env.headers.get(SUPERVISOR_HEADER, name) == name

    async def on_ready(env: Envelope[Ready]) -> None:
        ready(env.body.operator, env.body.pid)

    async def on_status(env: Envelope[dict[str, Any]]) -> SupervisorStatus | None:
        return status() if for_me(env) else None

    async def on_ctl(env: Envelope[Control]) -> ControlResult | None:
        return await control(env.body.action, env.body.target) if for_me(env) else None

    await ipc.subscribe(ipc.subjects.pattern("operator.ready.>"), on_ready)
    await ipc.subscribe(ipc.subjects.supervisor("status"), on_status)
    await ipc.subscribe(ipc.subjects.supervisor("ctl"), on_ctl)


async def probe(ipc: Ipc, supervisor: str) -> bool:
    """Whether supervisor ``supervisor`` answers a status request within
    :data:`PROBE_TIMEOUT` (it is alive and on the bus)."""
    try:
        await ipc.request(
            ipc.subjects.supervisor("status"),
            Ping(),
            SupervisorStatus,
            timeout=PROBE_TIMEOUT,
            headers={SUPERVISOR_HEADER: supervisor},
        )
    except EeveeError:
        return False
    return True


async def apply(action: ControlAction, procs: Sequence[OperatorProcess]) -> ControlResult:
    """Apply a lifecycle action to ``procs``; for start, stop and restart, wait until they
    settled. The result lists their statuses."""
    ok = True
    notes: list[str] = []
    for proc in procs:
        if action == ControlAction.HALT:
            res = await proc.halt()
        elif action == ControlAction.RESUME:
            res = await proc.resume()
        elif action == ControlAction.RELOAD:
            sent = proc.reload()
            res = ControlResult(ok=sent, message="" if sent else f"{proc.id} is not running")
        elif action == ControlAction.RESTART:
            proc.restart()
            res = ControlResult(ok=True)
        elif action == ControlAction.STOP:
            proc.stop()
            res = ControlResult(ok=True)
        elif action == ControlAction.START:
            proc.start()
            res = ControlResult(ok=True)
        else:  # pragma: no cover - every action is handled above
            res = ControlResult(ok=False, message=f"unknown action {action}")
        ok = ok and res.ok
        if res.message and len(procs) == 1:
            notes.append(res.message)
        elif res.message and not res.ok:  # of many: the failures (the table shows the rest)
            notes.append(f"{proc.id}: {res.message}")
    if action in (ControlAction.RESTART, ControlAction.STOP, ControlAction.START):
        await settle(procs, action)
    if action in (ControlAction.RESTART, ControlAction.START):
        # Asked to run: anything short of RUNNING is a failure the caller must hear of.
        for proc in procs:
            if proc.state not in (ProcessState.RUNNING, ProcessState.HALTED):
                ok = False
                why = f": {proc.message}" if proc.message else ""
                notes.append(f"{proc.id} is {proc.state.value}, not RUNNING{why}")
    return ControlResult(ok=ok, message="; ".join(notes), operators=[p.status() for p in procs])


async def settle(
    procs: Sequence[OperatorProcess], action: ControlAction, timeout: float = SETTLE_TIMEOUT
) -> None:
    """Wait (bounded) until ``procs`` reach a resting state after ``action`` (for a start, a
    BACKOFF ends the wait too: the start failed, whatever follows)."""
    if action == ControlAction.STOP:
        resting = RESTING | {ProcessState.STOPPED}
    else:
        resting = RESTING | {ProcessState.RUNNING, ProcessState.BACKOFF}
    deadline = time.monotonic() + timeout
    # The lifecycle takes a request up on its next turn of the loop: until then the state
    # is the one from before (RUNNING, for a restart).
    await asyncio.sleep(_GRACE)
    remaining = max(0.0, deadline - time.monotonic())
    await asyncio.gather(*(p.wait_state(resting, remaining) for p in procs))
