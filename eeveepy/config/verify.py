"""Checking a configuration as far as starting it would, short of starting it.

:func:`~eeveepy.config.load.load_config` checks the file itself; :func:`verify` then checks
what only running would otherwise show, for each enabled operator: that a ``command``'s
executable exists and may be run, and that a ``module`` imports and accepts its settings. The
module is run the way the supervisor would run it (``python -m``, a fresh interpreter, so
packages installed since this process started are seen) with ``EEVEE_CHECK=1``: eeveepy's
operator runtime then validates its settings, prints the problems and exits without touching
the bus. Problems name the file and key of ``eevee.toml`` (``EEVEE_SETTINGS_ORIGIN``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
from collections.abc import Collection
from pathlib import Path

from eeveepy.config.merge import OPERATORS_DIR
from eeveepy.config.models import Config
from eeveepy.config.operators import OperatorConfig
from eeveepy.problems import Problem, key_path
from eeveepy.runtime.contract import (
    ENV_CHECK,
    ENV_NATS_URL,
    ENV_OPERATOR_ID,
    ENV_SETTINGS,
    ENV_SETTINGS_ORIGIN,
    EXIT_CONFIG,
)

__all__ = ["CHECK_TIMEOUT", "settings_origin", "verify"]

CHECK_TIMEOUT = 20.0
"""Seconds one operator's settings check may take (a module that ignores ``EEVEE_CHECK``
would run on: it is stopped then, and not counted as a problem)."""
_UNUSED_URL = "nats://127.0.0.1:1"
"""Given to checked operators, which never connect: a check must not reach a real bus."""


def settings_origin(config: Config, cfg: OperatorConfig, label: str | None = None) -> str:
    """``EEVEE_SETTINGS_ORIGIN`` for ``cfg``: where its settings were written (the file
    named ``label``, by default its path)."""
    if config.source is None:
        return ""
    origin: dict[str, object] = {
        "file": label or str(config.source),
        "key": ["operators", cfg.id, "settings"],
    }
    merged = config.source.parent / OPERATORS_DIR / f"{cfg.id}.toml"
    if merged.is_file():
        origin["also"] = str(merged)
    return json.dumps(origin)


async def verify(
    config: Config,
    ids: Collection[str] | None = None,
    *,
    label: str | None = None,
    timeout: float = CHECK_TIMEOUT,
) -> list[Problem]:
    """Every problem starting the enabled operators (of ``ids``, when given) would meet, each
    located in the file named ``label`` (by default its path, as loading it says)."""
    label = label or (str(config.source) if config.source else "configuration")
    ops = [
        cfg for cfg in config.operators.values() if cfg.enabled and (ids is None or cfg.id in ids)
    ]
    found: list[Problem] = []
    for cfg in ops:
        if cfg.command is not None:
            found.extend(_check_command(label, cfg))
    # Two at a time: each is an interpreter importing the operator, on a machine that runs it.
    gate = asyncio.Semaphore(max(2, (os.cpu_count() or 2) // 2))

    async def one(cfg: OperatorConfig) -> list[Problem]:
        async with gate:
            return await _check_module(config, cfg, label, timeout)

    results = await asyncio.gather(*(one(cfg) for cfg in ops if cfg.module is not None))
    for problems in results:
        found.extend(problems)
    return found


def _where(label: str, cfg: OperatorConfig, key: str) -> str:
    return f"{label}: {key_path(['operators', cfg.id, key])}"


def _check_command(label: str, cfg: OperatorConfig) -> list[Problem]:
    assert cfg.command is not None
    exe = cfg.command[0]
    where = _where(label, cfg, "command")
    if os.sep in exe:
        path = Path(exe)
        if not path.exists():
            return [(where, f"{exe} does not exist (relative paths start where `eevee up` runs)")]
        if path.is_dir() or not os.access(path, os.X_OK):
            return [(where, f"{exe} is not an executable file (chmod +x?)")]
        return []
    search = cfg.env.get("PATH", os.environ.get("PATH", os.defpath))
    if shutil.which(exe, path=search) is None:
        return [(where, f"{exe!r} is not found on PATH; give its full path, or install it")]
    return []


async def _check_module(
    config: Config, cfg: OperatorConfig, label: str, timeout: float
) -> list[Problem]:
    assert cfg.module is not None
    env = {
        **os.environ,
        **cfg.env,
        ENV_CHECK: "1",
        ENV_OPERATOR_ID: cfg.id,
        ENV_NATS_URL: _UNUSED_URL,
        ENV_SETTINGS: json.dumps(cfg.settings),
        ENV_SETTINGS_ORIGIN: settings_origin(config, cfg, label),
    }
    proc = await asyncio.create_subprocess_exec(
        *cfg.argv(sys.executable),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()
        return []  # not eeveepy's runtime, or slow: nothing is known to be wrong
    where = _where(label, cfg, "module")
    stderr = err.decode(errors="replace").strip()
    last = stderr.splitlines()[-1] if stderr else f"exit code {proc.returncode}"
    if "No module named" in last and cfg.module in last and "Traceback" not in stderr:
        return [
            (
                where,
                f"no module named {cfg.module!r} in this Python environment: install its"
                " package (pip install -e DIR), or fix the name",
            )
        ]
    reported = _reported(out.decode(errors="replace"))
    if proc.returncode == EXIT_CONFIG and reported:
        return reported
    if proc.returncode not in (0, EXIT_CONFIG):
        return [(where, f"{cfg.module} fails before it starts: {last}")]
    return reported


def _reported(stdout: str) -> list[Problem]:
    """The problems in the check's JSON line (the last one; logging may precede it)."""
    for line in reversed(stdout.splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("problems"), list):
            return [(str(p[0]), str(p[1])) for p in data["problems"] if len(p) == 2]
    return []
