"""The ChatOps RPC server alone in an operator, for tests under ``eevee up`` (real bus
permissions). Settings: ``server`` (the ``[server]`` table of the crpc operator).
Run as ``python tests/operators/crpc_server_op.py``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from eeveepy import Operator
from operators.crpc.server import RunningServer, ServerSettings, start_server


class Settings(BaseModel):
    """Just the server's table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    server: ServerSettings


def create() -> Operator[Settings]:
    """The operator: the server starts with it and stops with it."""
    op = Operator(Settings, name="crpcsrv")
    running: list[RunningServer] = []

    @op.on_start
    async def start() -> None:
        running.append(await start_server(op.ipc, op.settings.server, op.log, data_dir=op.data_dir))

    @op.on_stop
    async def stop() -> None:
        for server in running:
            await server.stop()

    return op


if __name__ == "__main__":
    create().run()
