"""Pure parts of the operator's day: what a reload does to each operator, how an exit is
described, and the live status block's writing of whole lines."""

from __future__ import annotations

import asyncio
import io
import signal

from eeveepy.cli.live import LiveStatus
from eeveepy.config import OperatorConfig
from eeveepy.protocol.models import OperatorStatus
from eeveepy.supervisor.reload import Step, plan_reload
from eeveepy.supervisor.restarts import describe_exit


def op(op_id: str, **table: object) -> OperatorConfig:
    return OperatorConfig.model_validate({"id": op_id, "module": "operators.echo", **table})


def test_a_plan_names_what_happens_to_every_operator() -> None:
    old = {
        "same": op("same"),
        "settings": op("settings", settings={"a": 1}),
        "timing": op("timing"),
        "off": op("off"),
        "gone": op("gone"),
        "still_off": op("still_off", enabled=False),
    }
    new = {
        "same": op("same"),
        "settings": op("settings", settings={"a": 2}),
        "timing": op("timing", ping_interval=9),
        "off": op("off", enabled=False),
        "still_off": op("still_off", enabled=False),
        "fresh": op("fresh"),
    }
    plan = plan_reload(old, new)
    steps = {cfg.id: step for cfg, step in plan.steps}
    assert steps == {
        "same": Step.KEEP,
        "settings": Step.RELOAD,
        "timing": Step.RESTART,
        "off": Step.STOP,
        "still_off": Step.KEEP,
        "fresh": Step.ADD,
    }
    assert plan.removed == ["gone"]
    assert sorted(plan.touched) == ["fresh", "settings", "timing"]
    assert plan.summary() == {
        "added": ["fresh"],
        "removed": ["gone"],
        "restarted": ["timing"],
        "reloaded": ["settings"],
        "stopped": ["off"],
        "unchanged": ["same", "still_off"],
    }


def test_an_exit_is_described_with_its_signal() -> None:
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(-signal.SIGTERM) == "killed by SIGTERM"
    assert describe_exit(-200) == "killed by signal 200"
    assert describe_exit(None) == "no exit code"


def test_the_live_block_writes_whole_lines_and_is_erased_at_stop() -> None:
    out = io.StringIO()
    ops = [OperatorStatus(id="echo", state="RUNNING", pid=7)]
    live = LiveStatus(out, lambda: ops)
    live.refresh()
    live.write("up bus=x")  # print() writes the text and its newline apart
    assert "up bus=x" not in out.getvalue()
    live.write("\n")
    shown = out.getvalue()
    assert "up bus=x\n" in shown
    assert shown.count("echo") == 2  # drawn, then drawn again below the line
    ops.clear()  # shutting down: the operators are gone
    asyncio.run(live.stop())
    live.write("down\n")
    tail = out.getvalue()[len(shown) :]
    assert tail == "\033[1F\033[Jdown\n"  # the block erased, the last line written as it is
    assert "no operators configured" not in out.getvalue()
