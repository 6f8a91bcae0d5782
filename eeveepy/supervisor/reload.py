"""What a configuration reload changes, operator by operator.

A reload is transactional (see :meth:`~eeveepy.supervisor.core.Supervisor.reload`): the new
file must load, and the new operators' bus users must be taken by the server, before anything
changes. Then :func:`plan_reload` says what to do with each operator, in the new file's order:
start the new ones, remove the ones gone, and for the others compare the tables. A change of
``settings`` alone is applied in place (the settings file is rewritten, the process gets
SIGHUP); any other change restarts the operator, and ``enabled = false`` stops it. Operators
whose table did not change are left alone: their ``operators.d`` file is part of their table
(merged into ``settings``), so a change there is a change of settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from eeveepy.config import OperatorConfig

__all__ = ["ReloadPlan", "Step", "plan_reload"]


class Step(StrEnum):
    """What a reload does to one operator."""

    ADD = "add"
    """New in the file: start it (when enabled)."""
    RELOAD = "reload"
    """Rewrite its settings file and send SIGHUP."""
    RESTART = "restart"
    """Take the new table and restart the process."""
    STOP = "stop"
    """Disabled now: stop it."""
    KEEP = "keep"
    """Unchanged: nothing to do."""


_DONE = {
    Step.ADD: "added",
    Step.RELOAD: "reloaded",
    Step.RESTART: "restarted",
    Step.STOP: "stopped",
    Step.KEEP: "unchanged",
}


@dataclass
class ReloadPlan:
    """The operators a reload removes, then what it does to each of the others, in order."""

    removed: list[str] = field(default_factory=list)
    steps: list[tuple[OperatorConfig, Step]] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)
    """The ids whose table changed: they take the new one before their step."""

    @property
    def added(self) -> list[str]:
        """The ids new in the file."""
        return [cfg.id for cfg, step in self.steps if step is Step.ADD]

    @property
    def touched(self) -> list[str]:
        """The ids that start, restart or take new settings: those to check first."""
        return [cfg.id for cfg, step in self.steps if step in (Step.ADD, Step.RESTART, Step.RELOAD)]

    def summary(self) -> dict[str, list[str]]:
        """What the plan does, as ``eevee reload`` prints it: ids by ``added``, ``removed``,
        ``restarted``, ``reloaded``, ``stopped`` and ``unchanged`` (every key present)."""
        done: dict[str, list[str]] = {name: [] for name in _ORDER}
        done["removed"] = list(self.removed)
        for cfg, step in self.steps:
            done[_DONE[step]].append(cfg.id)
        return done


_ORDER = ("added", "removed", "restarted", "reloaded", "stopped", "unchanged")


def plan_reload(old: Mapping[str, OperatorConfig], new: Mapping[str, OperatorConfig]) -> ReloadPlan:
    """What turns the operators ``old`` into ``new``."""
    plan = ReloadPlan(removed=[op_id for op_id in old if op_id not in new])
    for op_id, cfg in new.items():
        before = old.get(op_id)
        if before is None:
            plan.steps.append((cfg, Step.ADD))
        elif cfg != before:
            plan.changed.add(op_id)
            if not cfg.enabled:
                plan.steps.append((cfg, Step.STOP))
            elif before.model_copy(update={"settings": cfg.settings}) == cfg:
                plan.steps.append((cfg, Step.RELOAD))
            else:
                plan.steps.append((cfg, Step.RESTART))
        else:
            plan.steps.append((cfg, Step.KEEP))
    return plan
