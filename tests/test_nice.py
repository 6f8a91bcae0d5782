"""``nice`` in an operator's table: its process, every thread of it, runs at that niceness,
whether forked from the fork server (``module``) or started fresh (``command``)."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest
from supervisor_fixtures import bash_op, system_factory

from eeveepy.config.operators import OperatorConfig
from eeveepy.errors import ConfigError


def niceness(pid: int) -> set[int]:
    """The niceness of each thread of process ``pid``."""
    return {os.getpriority(os.PRIO_PROCESS, t.id) for t in psutil.Process(pid).threads()}


def test_operators_run_at_their_configured_niceness(tmp_path: Path) -> None:
    supervisor_nice = os.getpriority(os.PRIO_PROCESS, 0)  # eevee up inherits the tests'
    if supervisor_nice > 7:
        pytest.skip(f"the tests run at niceness {supervisor_nice}: above what is configured")
    with system_factory(tmp_path) as make:
        system = make().write(
            {
                "forked": {"module": "operators.ping", "nice": 7},
                "fresh": bash_op(nice=5),
                "plain": {"module": "operators.echo"},
            }
        )
        system.up("forked", "fresh", "plain")
        forked, fresh, plain = (system.op(i)["pid"] for i in ("forked", "fresh", "plain"))
        assert niceness(forked) == {7}
        assert niceness(fresh) == {max(5, supervisor_nice)}
        assert niceness(plain) == {supervisor_nice}
        # eevee ps --json shows the niceness each runs at
        assert (system.op("forked")["nice"], system.op("plain")["nice"]) == (7, supervisor_nice)
        assert psutil.Process(system.pid).nice() == supervisor_nice  # the supervisor's own


def test_nice_must_be_0_to_19() -> None:
    for bad in (-1, 20, "5", 2.5):
        with pytest.raises((ValueError, ConfigError)):
            OperatorConfig.model_validate({"id": "x", "module": "m", "nice": bad})
    assert OperatorConfig.model_validate({"id": "x", "module": "m", "nice": 19}).nice == 19
