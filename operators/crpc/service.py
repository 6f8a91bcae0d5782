"""The ChatOps RPC operator: the ``rpc`` command, the endpoints' commands, the server side.

:func:`create` builds the operator: it declares ``rpc`` (see :mod:`~operators.crpc.chatcmds`),
and at start loads the signing key (a file, or the environment variable
``RPC_PRIVATE_KEY``; never logged), offers the stored endpoints' commands and polls them
(:mod:`~operators.crpc.client`). A registration the router refuses (a prefix that clashes with
another operator's command) is noted on its endpoint, shown by ``rpc list``. Stop ends the
pollers and the calls still running, bounded. With a ``[server]`` table the same operator
serves eevee's commands as a ChatOps RPC endpoint (:mod:`~operators.crpc.server`).
"""

from __future__ import annotations

from eeveepy import CommandInvocation, Operator
from eeveepy.protocol.models import CommandRejected
from eeveepy.runtime.commands import commands_of

from .chatcmds import USAGE, RpcCommand
from .client import Client
from .server import RunningServer, start_server
from .settings import ClientSettings, CrpcSettings
from .signing import load_private_key, read_pem
from .transport import Transport

__all__ = ["CrpcService", "create", "main"]


class CrpcService:
    """The operator's state: the client (once started)."""

    def __init__(self, op: Operator[CrpcSettings]) -> None:
        self.op = op
        self.client: Client | None = None
        self.server: RunningServer | None = None

    def transport(self, s: ClientSettings) -> Transport:
        """The signing HTTP client of the settings (the key is read here, never logged)."""
        source = s.private_key_file or f"the environment variable {s.private_key_env}"
        pem = read_pem(file=s.private_key_file, env=s.private_key_env)
        key = load_private_key(pem, source=source)
        return Transport(key, s.key_id, ca_file=s.ca_file)

    async def start(self) -> None:
        """Offer ``rpc`` (its permission comes from the settings) and start the client side,
        when enabled."""
        s = self.op.settings.client
        await self.op.ipc.subscribe(f"command.rejected.{self.op.id}", self.rejected)
        await commands_of(self.op).add_live(
            "rpc",
            self.rpc,
            usage=USAGE,
            help="ChatOps RPC endpoints: their methods become commands under their prefix.",
            permission=s.permission,
        )
        server = self.op.settings.server
        if server is not None:
            self.server = await start_server(
                self.op.ipc, server, self.op.log, data_dir=self.op.data_dir
            )
        if not s.enabled:
            return
        self.client = Client(self.op, self.transport(s))
        await self.client.start()

    async def stop(self) -> None:
        """Stop polling and calling, close the HTTP client, stop serving (each bounded)."""
        client, self.client = self.client, None
        if client is not None:
            await client.stop()
            await client.transport.close()
        server, self.server = self.server, None
        if server is not None:
            await server.stop()

    async def rpc(self, inv: CommandInvocation) -> str:
        """The ``rpc`` command (see :class:`~operators.crpc.chatcmds.RpcCommand`)."""
        if self.client is None:
            return "the ChatOps RPC client is disabled here (client.enabled = false)"
        return await RpcCommand(self.client)(inv)

    async def rejected(self, msg: CommandRejected) -> None:
        """The router refused one of our registrations (a prefix that is another operator's
        command): stop serving it at once, or we would share that command's invocations (its
        queue group), and say why in ``rpc list``."""
        self.op.log.error("command refused by the router", name=msg.name, reason=msg.reason)
        client = self.client
        if client is not None:
            endpoint = client.endpoints.owner_of(msg.name)
            if endpoint is not None:
                endpoint.last_error = f"the router refused `{msg.name}`: {msg.reason}"
            client.namespaces.pop(msg.name, None)
        await commands_of(self.op).remove(msg.name)


def create() -> Operator[CrpcSettings]:
    """Build the ChatOps RPC operator (nothing runs until ``run()`` or ``serve()``)."""
    op = Operator(CrpcSettings, name="crpc")
    service = CrpcService(op)
    op.extensions[CrpcService] = service
    op.on_start(service.start)
    op.on_stop(service.stop)
    return op


def main() -> None:
    """Run the ChatOps RPC operator as a process."""
    create().run()
