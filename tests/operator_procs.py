"""Operator processes in tests and benchmarks: the process contract's environment, and a
child whose stderr is collected and which stops bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def contract_env(
    *,
    url: str,
    prefix: str,
    op_id: str,
    tmp: Path,
    settings: dict[str, Any] | None = None,
    supervisor: str = "test",
    **extra: str,
) -> dict[str, str]:
    """This environment without EEVEE_*, plus the process contract for ``op_id``.

    ``settings`` None leaves ``EEVEE_SETTINGS`` unset; ``extra`` variables win.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("EEVEE_")}
    env.update(
        EEVEE_OPERATOR_ID=op_id,
        EEVEE_NATS_URL=url,
        EEVEE_SUBJECT_PREFIX=prefix,
        EEVEE_CACHE_DIR=str(tmp / "cache" / op_id),
        EEVEE_DATA_DIR=str(tmp / "data" / op_id),
        EEVEE_SUPERVISOR=supervisor,
    )
    if settings is not None:
        env["EEVEE_SETTINGS"] = json.dumps(settings)
    env.update(extra)
    return env


class OperatorProc:
    """An operator process (started with ``stderr=PIPE``) with its stderr collected."""

    def __init__(self, op_id: str, proc: asyncio.subprocess.Process) -> None:
        self.id = op_id
        self.proc = proc
        self.stderr = b""
        self.pid: int | None = None
        """Its pid as its Ready said (set by whoever waited for the Ready)."""
        assert proc.stderr is not None
        self._reader = asyncio.ensure_future(self._read(proc.stderr))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.stderr += chunk

    def log(self, n: int = 4000) -> str:
        """The tail of its stderr, for assertion messages."""
        return f"--- {self.id} stderr:\n{self.stderr.decode(errors='replace')[-n:]}"

    def lines(self) -> list[str]:
        """Its non-empty stderr lines so far."""
        return [line for line in self.stderr.decode().splitlines() if line.strip()]

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        """Signal it, wait up to ``timeout`` (then SIGKILL), collect the rest of stderr."""
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 1.0)
        assert self.proc.returncode is not None
        return self.proc.returncode


async def start_operator(module: str, env: dict[str, str]) -> OperatorProc:
    """``python -m module`` with ``env`` (see :func:`contract_env`), its stderr collected."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        env=env,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    return OperatorProc(env["EEVEE_OPERATOR_ID"], proc)


def spawn_operator(
    module: str, *, url: str, prefix: str, op_id: str, tmp: Path, settings: dict[str, Any]
) -> subprocess.Popen[bytes]:
    """``python -m module`` as operator ``op_id``, output discarded (for benchmarks)."""
    return subprocess.Popen(
        [sys.executable, "-m", module],
        env=contract_env(
            url=url, prefix=prefix, op_id=op_id, tmp=tmp, settings=settings, supervisor="bench"
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_all(procs: list[subprocess.Popen[bytes]], timeout: float = 5.0) -> None:
    """SIGTERM every process, then wait up to ``timeout`` each (SIGKILL past it)."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
