"""The vocabulary of a supervised operator: its states and why one run of its process ended.

States follow supervisord's::

    STOPPED --start--> STARTING --ready--> RUNNING <--halt/resume--> HALTED
                          |                   |
                   exit / no ready      exit / hung (missed pings)
                          v                   v
                       BACKOFF --delay--> STARTING        (or FATAL when flapping,
                                                          EXITED when the policy says no)
    any --stop--> STOPPING --> STOPPED
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["RESTING", "Outcome", "ProcessState"]


class ProcessState(StrEnum):
    """Lifecycle states of a supervised operator's process (``eevee ps`` shows them)."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    HALTED = "HALTED"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    EXITED = "EXITED"
    FATAL = "FATAL"


RESTING = frozenset({ProcessState.FATAL, ProcessState.EXITED})
"""States the process stays in until someone starts it again."""


class Outcome(StrEnum):
    """Why one run of an operator's process ended."""

    SPAWN_FAILED = "spawn-failed"
    """The process could not be started at all."""
    EXITED = "exited"
    """The process ended by itself."""
    REQUESTED = "requested"
    """It was stopped or restarted on request."""
    NOT_READY = "not-ready"
    """It did not say it was ready within ``start_timeout``; it was stopped."""
    HUNG = "hung"
    """It missed ``max_missed_pings`` pings in a row; it was stopped."""
