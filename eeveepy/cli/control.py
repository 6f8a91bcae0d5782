"""The commands that ask the running supervisor: ``ps``, ``ctl``, ``reload`` and ``down``.

Each connects through the state file (:mod:`eeveepy.cli.client`), asks on
``supervisor.status`` or ``supervisor.ctl``, prints the answer (a table, or JSON with
``--json``) and returns the exit code: 0 done, 1 refused or not reached (an operator that did
not come to RUNNING after ``start``/``restart``), 2 a configuration ``reload`` refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from eeveepy.cli.live import ps_table
from eeveepy.errors import BusDownError
from eeveepy.paths import Paths
from eeveepy.protocol.models import (
    Control,
    ControlAction,
    ControlResult,
    OperatorStatus,
    Ping,
    SupervisorStatus,
)

__all__ = ["cmd_ctl", "cmd_down", "cmd_ps", "cmd_reload"]

Connect = Callable[[argparse.Namespace], Awaitable[tuple[Any, Any, dict[str, str]]]]
"""Connects to the running system's bus: ``(nats client, ipc, request headers)``."""


def _err(text: str) -> None:
    print(f"eevee: {text}", file=sys.stderr)


async def _ctl(
    connect: Connect, args: argparse.Namespace, action: ControlAction, target: str, timeout: float
) -> ControlResult:
    from eeveepy.cli.client import ask_supervisor

    nc, ipc, to = await connect(args)
    try:
        if target not in ("all", "", "supervisor") and action != ControlAction.SHUTDOWN:
            to = await _runner(ipc, to, target)
        request = Control(action=action, target=target)
        return await ask_supervisor(ipc, "ctl", request, ControlResult, timeout=timeout, headers=to)
    finally:
        await nc.close()


async def _statuses(
    ipc: Any, to: dict[str, str], mine: SupervisorStatus | None = None
) -> list[SupervisorStatus]:
    """Every supervisor's status on the bus (of this prefix), the one in the state file first."""
    from eeveepy.cli.client import ask_supervisor

    if mine is None:
        mine = await ask_supervisor(ipc, "status", Ping(), SupervisorStatus, timeout=3, headers=to)
    others = await ipc.gather(ipc.subjects.supervisor("status"), Ping(), SupervisorStatus)
    rest = {e.body.supervisor: e.body for e in others if e.body.supervisor != mine.supervisor}
    return [mine, *(rest[name] for name in sorted(rest))]


async def _runner(ipc: Any, to: dict[str, str], target: str) -> dict[str, str]:
    """The headers addressing the supervisor that runs ``target``: the state file's when it
    does, else another that does, else one standing by for it, else the state file's."""
    from eeveepy.cli.client import ask_supervisor
    from eeveepy.supervisor.control import SUPERVISOR_HEADER

    mine = await ask_supervisor(ipc, "status", Ping(), SupervisorStatus, timeout=3, headers=to)
    if any(op.id == target and not op.standby for op in mine.operators):
        return to
    found = [
        (op.standby, n, status.supervisor)
        for n, status in enumerate(await _statuses(ipc, to, mine))
        for op in status.operators
        if op.id == target
    ]
    return {SUPERVISOR_HEADER: min(found)[2]} if found else to


def cmd_ps(args: argparse.Namespace, connect: Connect) -> int:
    """``eevee ps [ID...]``: the operators of every supervisor on the bus (those named, when
    given) and their state; a HOST column when several supervisors answer."""

    async def go() -> list[SupervisorStatus]:
        nc, ipc, to = await connect(args)
        try:
            return await _statuses(ipc, to)
        finally:
            await nc.close()

    statuses = asyncio.run(go())
    for status in statuses:
        for warning in status.warnings:
            _err(f"warning: {warning}" + (f" ({status.supervisor})" if len(statuses) > 1 else ""))
    operators: Sequence[OperatorStatus] = [op for s in statuses for op in s.operators]
    if args.ids:
        known = {op.id for op in operators}
        unknown = [i for i in args.ids if i not in known]
        if unknown:
            _err(f"unknown operator {', '.join(unknown)} (known: {', '.join(known) or 'none'})")
            return 1
        operators = [op for op in operators if op.id in args.ids]
    if args.json:
        print(json.dumps([op.model_dump(mode="json") for op in operators], indent=2))
    else:
        print(ps_table(operators, sys.stdout.isatty(), hosts=len(statuses) > 1))
    return 0


def cmd_ctl(args: argparse.Namespace, connect: Connect) -> int:
    """``eevee ctl ACTION TARGET``: 1 when refused, or when ``start``/``restart`` did not
    bring every operator to RUNNING within the supervisor's wait."""
    action = ControlAction(args.action)
    result = asyncio.run(_ctl(connect, args, action, args.target, args.timeout))
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        if result.operators:
            print(ps_table(result.operators, sys.stdout.isatty()))
        if result.message:
            print(result.message, file=sys.stdout if result.ok else sys.stderr)
        for problem in result.problems:
            print(f"  {problem.where}: {problem.what}", file=sys.stderr)
    if result.problems:
        return 2
    return 0 if result.ok else 1


def cmd_reload(args: argparse.Namespace, connect: Connect) -> int:
    """``eevee reload``: the supervisor re-reads its configuration, checks it and applies it;
    prints what changed, or every problem (then nothing changed: exit 2)."""
    result = asyncio.run(_ctl(connect, args, ControlAction.RELOAD, "supervisor", args.timeout))
    if args.json:
        print(
            json.dumps(
                {
                    "ok": result.ok,
                    "message": result.message,
                    "plan": result.plan,
                    "problems": [p.model_dump() for p in result.problems],
                },
                indent=2,
            )
        )
    elif result.ok:
        for what, ids in result.plan.items():
            if ids:
                print(f"{what:<10} {', '.join(ids)}")
        print(result.message)
    else:
        _err(result.message)
        for problem in result.problems:
            print(f"  {problem.where}: {problem.what}", file=sys.stderr)
    if result.ok:
        return 0
    return 2 if result.problems else 1


def cmd_down(args: argparse.Namespace, connect: Connect, paths: Paths) -> int:
    """``eevee down``: ask for a graceful stop (SIGTERM when the bus does not answer), then
    wait up to ``--timeout`` for the supervisor's process to end."""
    import psutil

    from eeveepy.supervisor.statefile import read_state

    state = read_state(paths)
    pid = int(state["pid"])
    try:
        asyncio.run(_ctl(connect, args, ControlAction.SHUTDOWN, "all", 3))
    except BusDownError as exc:  # the same graceful stop, asked by signal
        _err(f"{exc}\neevee: sending SIGTERM to eevee (pid {pid}) instead")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            # A zombie has exited; only its parent has not reaped it yet.
            gone = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            gone = True
        if gone:
            print("eevee is down")
            return 0
        time.sleep(0.05)
    _err(f"eevee (pid {pid}) is still stopping after {args.timeout:g} s")
    return 1
