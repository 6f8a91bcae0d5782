"""The client side of the ChatOps RPC operator: endpoints' methods as chat commands.

Each endpoint is offered to the router as one command named after its prefix (the router
dispatches on a command word): ``!ops wcid hubot --fruit apple`` reaches
:meth:`Client.call` with ``text = "wcid hubot"`` and ``args = {"fruit": "apple"}`` (the
router has taken the ``--long-args`` out, as ChatOps RPC clients do). The first listed method
whose regex matches the text entirely (anchored, case-insensitive) is called with a signed
``POST``; its named groups that matched, overridden by the arguments, are its params. The
prefix alone lists the namespace's help. The call runs in the background so a slow server
holds nothing up: the answer (or the timeout message) is said in the room when it comes.
"""

from __future__ import annotations

import asyncio
from typing import Final

from eeveepy import CommandInvocation, Operator
from eeveepy.aio import cancel_and_wait
from eeveepy.runtime.commands import commands_of

from .endpoints import Endpoint, Endpoints
from .invoke import render, request_body
from .listing import Namespace
from .settings import CrpcSettings
from .transport import Transport

__all__ = ["STOP_TIMEOUT", "Client", "lead_of"]

STOP_TIMEOUT: Final = 2.0
"""Seconds the calls still running get at stop before they are cancelled."""


def lead_of(inv: CommandInvocation) -> str:
    """How the user wrote the command's start (``!``, ``eevee: ``, nothing in private)."""
    text = inv.message.text.strip()
    at = text.lower().find(inv.command)
    return text[:at] if at > 0 else ""


class Client:
    """The endpoints' commands of one operator; started and stopped by the service."""

    def __init__(self, op: Operator[CrpcSettings], transport: Transport) -> None:
        self.op = op
        self.transport = transport
        self.namespaces: dict[str, Namespace] = {}
        """Prefix -> the namespace offered under it."""
        self.endpoints = Endpoints(
            op.store, transport, lambda: op.settings.client, self.changed, op.log.warning
        )
        self._calls: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Offer the stored listings' commands, then poll every endpoint."""
        for endpoint in await self.endpoints.load():
            await self.changed(endpoint)
            self.endpoints.start(endpoint)

    async def stop(self) -> None:
        """Stop polling; give running calls :data:`STOP_TIMEOUT` seconds, then cancel them."""
        await self.endpoints.stop()
        if self._calls:
            await asyncio.wait(self._calls, timeout=STOP_TIMEOUT)
        await asyncio.gather(*(cancel_and_wait(t) for t in list(self._calls)))

    # -- registrations ---------------------------------------------------------------------

    async def changed(self, endpoint: Endpoint) -> None:
        """Register ``endpoint``'s command anew (its listing or prefix changed)."""
        old = next((p for p, ns in self.namespaces.items() if ns.url == endpoint.url), None)
        if old is not None and old != endpoint.prefix:
            await self.withdraw(old)
        namespace = endpoint.namespace()
        if namespace is None:
            return
        self.namespaces[endpoint.prefix] = namespace
        try:
            await commands_of(self.op).add_live(
                endpoint.prefix,
                self.call,
                help=namespace.summary(),
                permission=self.op.settings.client.method_permission,
            )
        except Exception as exc:
            endpoint.last_error = f"cannot offer `{endpoint.prefix}`: {exc}"
            self.op.log.error("endpoint command not registered", url=endpoint.url, error=str(exc))

    async def withdraw(self, prefix: str) -> None:
        """Stop offering ``prefix`` (the router forgets it)."""
        self.namespaces.pop(prefix, None)
        await commands_of(self.op).remove(prefix)

    # -- calls -----------------------------------------------------------------------------

    async def call(self, inv: CommandInvocation) -> str | None:
        """Run the method ``inv`` names under its prefix (in the background), or say why not."""
        namespace = self.namespaces.get(inv.command)
        lead = lead_of(inv)
        if namespace is None:
            return f"`{inv.command}` is not available any more"
        if not inv.text.strip() and not inv.args:
            return namespace.help_text(lead)
        found = namespace.match(inv.text, inv.args)
        if found is None:
            return (
                f"no `{inv.command}` method matches `{inv.text}`; `{lead}{inv.command}` lists them"
            )
        method, params = found
        msg = inv.message
        body = request_body(msg.user.account or msg.user.name, msg.room, method.name, params)
        task = asyncio.get_running_loop().create_task(
            self._call(inv, namespace, method.url, body), name=f"crpc-call {method.name}"
        )
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        return None

    async def _call(
        self, inv: CommandInvocation, namespace: Namespace, url: str, body: bytes
    ) -> None:
        timeout = self.op.settings.client.timeout
        answer = await self.transport.post(url, body, timeout)
        if answer.error is not None:
            self.op.log.warning("method call failed", url=url, error=answer.error)
        command = inv.message.text.strip()
        text = render(
            answer,
            command=command,
            user=inv.message.user.name,
            error_response=namespace.listing.error_response,
        )
        if answer.timed_out:  # said plainly, with the server's own words when it has some
            late = f"`{command}` timed out: {url} gave no answer within {timeout:g} s"
            text = f"{text} ({late})" if namespace.listing.error_response else late
        if text:
            try:
                await self.op.reply(inv.message, text)
            except Exception as exc:
                self.op.log.error("could not reply", error=repr(exc))
