"""Admin: ``!ps`` and ``!restart ID`` in chat, answered by asking the supervisor.

``!ps`` requests ``{p}.supervisor.status`` (as ``eevee ps`` does) and answers with one compact
line: ``supervisor main, 4 operators: router RUNNING 2h, echo RUNNING 5m, seen BACKOFF (3
restarts; exit code 1)``. ``!restart ID`` (an operator id, or ``all``) requests
``{p}.supervisor.ctl`` with a ``restart`` control, as ``eevee ctl restart ID`` does, and reports
the result. Both are registered with ``permission = "admins"``: only the router's admins may
run them (see "Identities and permissions" in docs/protocol.md).

With several supervisors on one bus, set ``supervisor`` to the name of the one to ask (it goes
into the ``supervisor`` header); unset, every supervisor answers and the first reply wins. Run
it under ``eevee up`` (``module = "operators.admin"``, next to ``operators.router``) or alone::

    python -m operators.admin --id admin --nats-url nats://127.0.0.1:4222
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from eeveepy import CommandInvocation, Operator
from eeveepy.errors import BusError, EnvelopeError, SubjectError
from eeveepy.protocol.models import (
    ChatMessage,
    Control,
    ControlAction,
    ControlResult,
    OperatorStatus,
    Ping,
    SupervisorStatus,
)
from eeveepy.protocol.subjects import validate_operator_id
from eeveepy.supervisor.core import SUPERVISOR_HEADER

_ACTIVE = frozenset({"RUNNING", "HALTED"})


class AdminSettings(BaseModel):
    """Settings of the admin operator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    supervisor: str | None = None
    """Name of the supervisor to ask (the ``supervisor`` header); None: whichever answers."""
    status_timeout: float = Field(default=3.0, gt=0)
    """Seconds to wait for ``supervisor.status``."""
    ctl_timeout: float = Field(default=20.0, gt=0)
    """Seconds to wait for the result of a restart (the supervisor waits up to 10 s for the
    operators to settle). The command answers the router at once and reports when done."""
    max_message: int = Field(default=80, ge=0)
    """Characters of an operator's status message shown."""


def uptime(seconds: float) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``."""
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def describe(op: OperatorStatus, max_message: int = 80) -> str:
    """One operator, compactly: ``echo RUNNING 5m`` or ``seen FATAL (2 restarts; why)``."""
    text = f"{op.id} {op.state}"
    if op.state in _ACTIVE and op.uptime_s is not None:
        text += f" {uptime(op.uptime_s)}"
    notes = []
    if op.restarts:
        notes.append(f"{op.restarts} restart{'' if op.restarts == 1 else 's'}")
    if op.message and op.state not in _ACTIVE and max_message:
        message = " ".join(op.message.split())
        notes.append(message if len(message) <= max_message else message[: max_message - 1] + "…")
    return text + (f" ({'; '.join(notes)})" if notes else "")


def describe_status(status: SupervisorStatus, max_message: int = 80) -> str:
    """The answer to ``!ps``."""
    n = len(status.operators)
    head = f"supervisor {status.supervisor}, {n} operator{'' if n == 1 else 's'}"
    if not status.operators:
        return head + "."
    return head + ": " + ", ".join(describe(op, max_message) for op in status.operators)


def describe_result(target: str, result: ControlResult, max_message: int = 80) -> str:
    """The answer to ``!restart``."""
    ops = ", ".join(describe(op, max_message) for op in result.operators)
    if result.ok:
        return f"restarted {target}" + (f": {ops}" if ops else ".")
    return f"could not restart {target}: {result.message or 'refused'}" + (
        f" ({ops})" if ops else ""
    )


def create() -> Operator[AdminSettings]:
    """Build the admin operator (nothing runs until ``run()`` or ``serve()``)."""
    op = Operator(AdminSettings, name="admin")
    tasks: set[asyncio.Task[None]] = set()

    def headers() -> dict[str, str]:
        name = op.settings.supervisor
        return {SUPERVISOR_HEADER: name} if name else {}

    def unreachable(exc: Exception) -> str:
        return f"cannot reach the supervisor: {exc}"

    @op.command("ps", usage="!ps", help="List the operators and their states.", permission="admins")
    async def ps(inv: CommandInvocation) -> str:
        s = op.settings
        try:
            env = await op.ipc.request(
                op.subjects.supervisor("status"),
                Ping(),
                SupervisorStatus,
                timeout=s.status_timeout,
                headers=headers(),
            )
        except (BusError, EnvelopeError) as exc:
            return unreachable(exc)
        return describe_status(env.body, s.max_message)

    async def restart(target: str, msg: ChatMessage) -> None:
        s = op.settings
        try:
            env = await op.ipc.request(
                op.subjects.supervisor("ctl"),
                Control(action=ControlAction.RESTART, target=target),
                ControlResult,
                timeout=s.ctl_timeout,
                headers=headers(),
            )
        except (BusError, EnvelopeError) as exc:
            text = unreachable(exc)
        else:
            text = describe_result(target, env.body, s.max_message)
        try:
            await op.reply(msg, text)
        except Exception as exc:  # the bus went away meanwhile (we were restarted, ...)
            op.log.warning("restart result not reported", target=target, error=repr(exc))

    @op.command(
        "restart",
        usage="!restart ID",
        help="Restart the operator ID (or `all`).",
        pattern=r"\s*(?P<target>\S+)\s*",
        permission="admins",
    )
    async def restart_command(inv: CommandInvocation) -> str | None:
        target = inv.args["target"].lower()
        if target != "all":
            try:
                validate_operator_id(target)
            except SubjectError:
                return f"{inv.args['target']!r} is not an operator id."
        if target in ("all", op.id):
            # We are restarted too, and will not be there to tell: say it first.
            await op.reply(inv.message, f"restarting {target}, myself included…")
        # The supervisor answers once the operators have settled, which may take longer than
        # the router waits for a command: answer the router now, report when it is done.
        task = asyncio.get_running_loop().create_task(restart(target, inv.message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return None

    @op.on_stop
    async def cancel() -> None:
        for task in list(tasks):
            task.cancel()

    return op


def main() -> None:
    """Run the admin operator as a process."""
    create().run()


if __name__ == "__main__":
    main()
