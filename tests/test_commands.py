"""The command author's API and the command protocol's rules, no server: declaring commands
(``op.command``), what a registration may carry, and the subjects and queue of a command.
The router's pure logic is tested in tests/test_router_logic.py."""

from __future__ import annotations

import pytest

from eeveepy import Operator
from eeveepy.errors import OperatorError, SubjectError
from eeveepy.protocol.commands import check_registration, run_queue
from eeveepy.protocol.models import CommandInvocation, CommandRegistration, RateLimit
from eeveepy.protocol.subjects import Subjects
from eeveepy.runtime.commands import commands_of

# -- registrations ----------------------------------------------------------------------------


def reg(name: str = "echo", operator: str = "echo", **kw: object) -> CommandRegistration:
    return CommandRegistration.model_validate({"name": name, "operator": operator, **kw})


def test_check_registration() -> None:
    assert check_registration(reg(pattern=r"(?P<text>.+)")) == ""
    assert "invalid pattern" in check_registration(reg(pattern="(unclosed"))
    assert "router's own" in check_registration(reg("help"))
    assert "router's own" in check_registration(reg(aliases=["help"]))
    assert "invalid alias" in check_registration(reg(aliases=["Not Valid"]))
    assert "longer" in check_registration(reg(pattern="x" * 2000))


def test_subjects_and_queue() -> None:
    subjects = Subjects("acme.bot")
    assert subjects.command_sync() == "acme.bot.command.sync"
    assert subjects.command_rejected("irc.libera") == "acme.bot.command.rejected.irc.libera"
    with pytest.raises(SubjectError):
        subjects.command_rejected("Bad Id")
    assert run_queue("echo") == "cmd.echo"


# -- the author API ---------------------------------------------------------------------------


def test_declaring_commands() -> None:
    op = Operator(operator_id="tools")

    @op.command("grep", usage="!grep WORD", help="Find WORD.", pattern=r"(?P<word>\S+)")
    async def grep(inv: CommandInvocation) -> str | None:
        return inv.args["word"]

    @op.command("up", aliases=["uptime"], rate_limit=RateLimit(count=1, period=5))
    def up(inv: CommandInvocation) -> str:
        return "up"

    regs = commands_of(op).registrations()
    assert [(r.name, r.operator, r.pattern) for r in regs] == [
        ("grep", "tools", r"(?P<word>\S+)"),
        ("up", "tools", None),
    ]
    assert regs[1].aliases == ["uptime"]
    patterns = sorted(s.pattern for s in op.ipc._subs)
    assert patterns == ["eevee.command.run.grep", "eevee.command.run.up", "eevee.command.sync"]
    assert {s.queue for s in op.ipc._subs if "run" in s.pattern} == {"cmd.grep", "cmd.up"}

    with pytest.raises(OperatorError, match="twice"):
        op.command("up")(up)
    with pytest.raises(OperatorError, match="invalid pattern"):
        op.command("bad", pattern="(")(up)
    with pytest.raises(OperatorError, match="name"):
        op.command("Bad Name")(up)
    with pytest.raises(OperatorError, match="router's own"):
        op.command("help")(up)
    with pytest.raises(TypeError):
        op.command("x", nonsense=True)(up)


async def test_live_commands_need_a_running_operator() -> None:
    op = Operator(operator_id="tools")

    async def handler(inv: CommandInvocation) -> str:
        return "x"

    commands = commands_of(op)
    with pytest.raises(OperatorError, match="needs a running operator"):
        await commands.add_live("later", handler)
    assert not await commands.remove("never")  # nothing served: nothing to withdraw
    commands.add("now", handler)
    assert commands.served() == ["now"]
    assert await commands.remove("now")  # before the operator runs: only forgotten
    assert commands.served() == []
    assert commands.registrations() == []
