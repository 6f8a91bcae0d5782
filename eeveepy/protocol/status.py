"""One operator's status as a supervisor reports it (``supervisor.status``, ``control.result``).

Kept apart from :mod:`eeveepy.protocol.models` (which re-exports both names) so that the
wire models stay one module of readable size.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Health", "OperatorStatus"]


class Health(StrEnum):
    """Whether an operator does its job fully (``ok``) or only partly (``degraded``)."""

    OK = "ok"
    DEGRADED = "degraded"


class OperatorStatus(BaseModel):
    """One operator as the supervisor sees it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    state: str
    pid: int | None = None
    restarts: int = 0
    uptime_s: float | None = None
    rss_bytes: int | None = None
    cpu_percent: float | None = None
    nice: int | None = Field(
        default=None, description="The niceness the process runs at ([operators.<id>] nice)."
    )
    ping_ms: float | None = None
    message: str = ""
    health: Health | None = Field(
        default=None, description="As the operator's last pong said; null: not reported."
    )
    problem: str = Field(default="", description="The operator's problem, when degraded.")
    host: str = Field(default="", description="The supervisor that runs it (or stands by).")
    standby: bool = Field(
        default=False, description="Stopped, ready to take over from the supervisor running it."
    )
