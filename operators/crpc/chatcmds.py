"""The ``rpc`` chat command: add, remove, list, debug, set prefix, reload endpoints.

``rpc add URL --prefix P`` checks the URL (HTTPS, or HTTP to loopback or with
``allow_plaintext``) and the prefix (a command name no other endpoint uses), stores the
endpoint and polls it at once, answering with the first poll's result. ``rpc remove URL``
stops polling it and withdraws its command; ``rpc list`` shows each endpoint's prefix, last
update, last result and last error; ``rpc debug URL`` the stored listing; ``rpc set prefix URL
P`` moves it to another prefix; ``rpc reload`` polls every endpoint now. Who may run ``rpc``
is the router's business (the command's ``permission``, admins by default).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Final

from eeveepy import CommandInvocation
from eeveepy.errors import EndpointError

from .client import Client, lead_of
from .endpoints import Endpoint
from .settings import PREFIX_RE
from .transport import check_url

__all__ = ["RESERVED", "USAGE", "RpcCommand"]

USAGE: Final = (
    "rpc add URL --prefix P | rpc remove URL | rpc list | rpc debug URL | "
    "rpc set prefix URL P | rpc reload"
)
RESERVED: Final = frozenset({"rpc", "help"})
"""Prefixes that cannot be given to an endpoint."""


def _ago(when: datetime | None) -> str:
    if when is None:
        return "never"
    seconds = int((datetime.now(UTC) - when).total_seconds())
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def status_line(e: Endpoint) -> str:
    """One endpoint in ``rpc list``."""
    line = f"{e.url} (prefix: {e.prefix}) - {_ago(e.polled_at)} - {e.last_result}"
    if e.last_error and e.last_error != e.last_result:
        line += f" (last error: {e.last_error})"
    return line


class RpcCommand:
    """The ``rpc`` command's handler over a :class:`~operators.crpc.client.Client`."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def __call__(self, inv: CommandInvocation) -> str:
        words = inv.text.split()
        verb = words[0].lower() if words else ""
        try:
            if verb == "add" and len(words) == 2:
                return await self.add(words[1], inv.args.get("prefix", ""), lead_of(inv))
            if verb == "remove" and len(words) == 2:
                return await self.remove(words[1])
            if verb == "list" and len(words) == 1:
                return self.list()
            if verb == "debug" and len(words) == 2:
                return self.debug(words[1])
            if words[:2] == ["set", "prefix"] and len(words) == 4:
                return await self.set_prefix(words[2], words[3])
            if verb == "reload" and len(words) == 1:
                return await self.reload()
        except EndpointError as exc:
            return str(exc)
        return f"usage: {USAGE}"

    def _settings_url(self, url: str) -> str:
        return check_url(url, allow_plaintext=self.client.op.settings.client.allow_plaintext)

    def _known(self, url: str) -> Endpoint:
        endpoints = self.client.endpoints.by_url
        endpoint = endpoints.get(url) or endpoints.get(url.rstrip("/"))
        if endpoint is None:
            raise EndpointError(f"I'm not polling {url}; `rpc list` shows what I poll")
        return endpoint

    @staticmethod
    def _check_prefix(prefix: str) -> str:
        prefix = prefix.strip().lower()
        if not prefix or prefix == "true":
            raise EndpointError("give the endpoint a prefix: rpc add URL --prefix NAME")
        if not PREFIX_RE.fullmatch(prefix) or prefix in RESERVED:
            raise EndpointError(
                f"{prefix!r} cannot be a prefix: it becomes a command name (letters, digits, "
                "- and _, at most 64, not rpc or help)"
            )
        return prefix

    async def add(self, url: str, prefix: str, lead: str) -> str:
        """``rpc add URL --prefix P``: store, poll at once, say how it went."""
        clean = self._settings_url(url)
        prefix = self._check_prefix(prefix)
        endpoint = await self.client.endpoints.add(clean, prefix)
        ok = await self.client.endpoints.poll(clean)
        self.client.endpoints.start(endpoint, polled=ok)
        note = "" if clean == url else f" (as {clean})"
        if not ok:
            return (
                f"Added {clean}{note} with the prefix `{prefix}`, but its listing failed: "
                f"{endpoint.last_result}. I'll keep trying."
            )
        return (
            f"Okay, I'll poll {clean}{note} for chatops with the prefix `{prefix}`: "
            f"{endpoint.last_result} `{lead}{prefix}` lists them."
        )

    async def remove(self, url: str) -> str:
        """``rpc remove URL``: stop polling it and withdraw its command."""
        endpoint = await self.client.endpoints.remove(self._known(url).url)
        if endpoint.prefix in self.client.namespaces:
            await self.client.withdraw(endpoint.prefix)
        return f"Okay, I no longer poll {endpoint.url}; `{endpoint.prefix}` is gone."

    def list(self) -> str:
        """``rpc list``: every endpoint's prefix, last update and last result."""
        endpoints = self.client.endpoints.by_url.values()
        if not endpoints:
            return "I poll no ChatOps RPC endpoints; add one with rpc add URL --prefix NAME"
        return "\n".join(["Endpoint - Updated - Last response", *map(status_line, endpoints)])

    def debug(self, url: str) -> str:
        """``rpc debug URL``: the listing in use, as stored."""
        endpoint = self._known(url)
        if endpoint.listing is None:
            return f"No listing from {endpoint.url} yet: {endpoint.last_result}"
        listing = endpoint.listing.model_dump(mode="json")
        return f"Info for {endpoint.url}:\n{json.dumps(listing, indent=2, ensure_ascii=False)}"

    async def set_prefix(self, url: str, prefix: str) -> str:
        """``rpc set prefix URL P``: move the endpoint to another prefix."""
        endpoint = self._known(url)
        prefix = self._check_prefix(prefix)
        await self.client.endpoints.set_prefix(endpoint.url, prefix)
        await self.client.changed(endpoint)
        return f"Okay, I'll use '{prefix}' as a prefix for {endpoint.url}"

    async def reload(self) -> str:
        """``rpc reload``: poll every endpoint now and tell the results."""
        endpoints = list(self.client.endpoints.by_url.values())
        await asyncio.gather(*(self.client.endpoints.poll(e.url) for e in endpoints))
        if not endpoints:
            return "I poll no ChatOps RPC endpoints."
        return "\n".join(status_line(e) for e in endpoints)
