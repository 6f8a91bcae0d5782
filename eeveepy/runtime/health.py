"""An operator's health: ``ok``, or ``degraded`` with the problems that make it so.

An operator can run and answer pings while failing at part of its job: its key-value writes
fail, a connector cannot join a room... It says so through :attr:`Operator.health
<eeveepy.runtime.Operator.health>`::

    op.health.degrade("cannot reach the weather service", source="weather")
    ...
    op.health.ok(source="weather")

Each ``source`` holds at most one problem; the operator is degraded while any source has one.
Its pongs carry the state and the problems (``health``, ``problem``), so the supervisor shows
them in ``eevee ps``. Becoming degraded is logged at error level (once per source, not on
every update of the text), recovering at info level.
"""

from __future__ import annotations

from collections.abc import Callable

from structlog.typing import FilteringBoundLogger

from eeveepy.protocol.models import MAX_PROBLEM_LENGTH
from eeveepy.protocol.models import Health as HealthState

__all__ = ["HealthState", "OperatorHealth"]


class OperatorHealth:
    """The problems an operator reports, by source; see the module docstring."""

    def __init__(self, log: Callable[[], FilteringBoundLogger]) -> None:
        self._log = log  # a getter: the runtime rebinds its logger once the id is known
        self._problems: dict[str, str] = {}

    @property
    def state(self) -> HealthState:
        """``degraded`` while any source has a problem, else ``ok``."""
        return HealthState.DEGRADED if self._problems else HealthState.OK

    @property
    def problem(self) -> str:
        """Every current problem as ``source: text``, joined with ``; `` (cut to fit a pong)."""
        text = "; ".join(f"{source}: {what}" for source, what in self._problems.items())
        if len(text) > MAX_PROBLEM_LENGTH:
            text = text[: MAX_PROBLEM_LENGTH - 1] + "…"
        return text

    @property
    def problems(self) -> dict[str, str]:
        """A copy of the current problems by source."""
        return dict(self._problems)

    def degrade(self, problem: str, *, source: str = "operator") -> None:
        """Report (or update the text of) ``source``'s problem; the operator is degraded."""
        first = source not in self._problems
        self._problems[source] = problem
        if first:
            self._log().error("unhealthy", source=source, problem=problem)

    def ok(self, *, source: str = "operator") -> None:
        """``source`` has no problem any more (nothing happens if it had none)."""
        if self._problems.pop(source, None) is not None:
            self._log().info("healthy again", source=source, health=self.state.value)
