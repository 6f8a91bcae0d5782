"""The restart policy of one operator: what follows when its process ended by itself.

Given why the run ended and the exit code, :meth:`Restarts.judge` says whether the operator
is given up on (FATAL: invalid settings, or flapping: more than ``max_restarts`` failures
within ``restart_window``), left alone (EXITED: the ``restart`` policy says no) or restarted
after a jittered, doubling backoff (BACKOFF).
"""

from __future__ import annotations

import signal
import time
from collections import deque
from dataclasses import dataclass

from eeveepy.aio import Backoff
from eeveepy.config import OperatorConfig, RestartPolicy
from eeveepy.runtime.contract import EXIT_CONFIG
from eeveepy.supervisor.states import Outcome, ProcessState

__all__ = ["EX_CONFIG", "Restarts", "Verdict", "describe_exit"]

EX_CONFIG = EXIT_CONFIG  # the operator's settings are invalid: restarting will not help
"""The operator says its settings are invalid: restarting will not help."""


@dataclass(frozen=True)
class Verdict:
    """What to do after a run: the state to take, why, and (BACKOFF) how long to wait."""

    state: ProcessState
    message: str
    delay: float = 0.0
    level: str = "info"
    """The log level it is worth: a crash is a warning, giving up an error."""


def describe_exit(code: int | None) -> str:
    """``exit code 3``, ``killed by SIGKILL`` (a negative code is the signal's number)."""
    if code is None:
        return "no exit code"
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


class Restarts:
    """The backoff and the recent failures of one operator, judged by its configuration."""

    def __init__(self, cfg: OperatorConfig) -> None:
        self.cfg = cfg
        self._backoff = Backoff(cfg.backoff_initial, cfg.backoff_max)
        self._failures: deque[float] = deque()

    def reconfigure(self, cfg: OperatorConfig) -> None:
        """Judge by ``cfg`` from now on (the backoff starts again from its first step)."""
        self.cfg = cfg
        self._backoff = Backoff(cfg.backoff_initial, cfg.backoff_max)

    def reset(self) -> None:
        """Forget the failures and start the backoff again: after a healthy run, or a start."""
        self._backoff.reset()
        self._failures.clear()

    def judge(self, outcome: Outcome, code: int | None, message: str) -> Verdict:
        """The verdict on a run that ended by itself (not on request).

        ``message`` says why it ended when it did not exit (not ready, hung, not spawned).
        """
        if code == EX_CONFIG:
            return Verdict(
                ProcessState.FATAL,
                "invalid settings (exit 78): fix the config, then ctl start",
                level="error",
            )
        clean = code == 0 and outcome is Outcome.EXITED
        policy = self.cfg.restart
        detail = message if outcome is not Outcome.EXITED else describe_exit(code)
        if policy == RestartPolicy.NEVER or (policy == RestartPolicy.ON_FAILURE and clean):
            return Verdict(ProcessState.EXITED, detail, level="info" if clean else "warning")
        now = time.monotonic()
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self.cfg.restart_window:
            self._failures.popleft()
        if len(self._failures) > self.cfg.max_restarts:
            return Verdict(
                ProcessState.FATAL,
                f"flapping: {len(self._failures)} restarts in {self.cfg.restart_window:g} s"
                f" (last: {detail}); `eevee ctl start {self.cfg.id}` to try again",
                level="error",
            )
        delay = self._backoff.next()
        return Verdict(
            ProcessState.BACKOFF,
            f"{detail}; restarting in {delay:.2f} s",
            delay,
            level="info" if clean else "warning",
        )
