"""Settings of the ChatOps RPC operator (``config/operators.d/crpc.toml``; see docs/crpc.md)."""

from __future__ import annotations

import re
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .server.settings import ServerSettings

__all__ = ["PREFIX_RE", "ClientSettings", "CrpcSettings"]

PREFIX_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
"""An endpoint's prefix: it becomes a command name, so it follows the same rule."""


class ClientSettings(BaseModel):
    """The client side: calling ChatOps RPC servers from chat."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    """Offer the commands that call ChatOps RPC servers."""
    private_key_file: str | None = None
    """PEM file of the RSA key requests are signed with (wins over ``private_key_env``)."""
    private_key_env: str = "RPC_PRIVATE_KEY"
    """Environment variable holding the PEM key when no file is given (the reference
    client's variable)."""
    key_id: str = Field(default="eevee", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    """The ``keyid`` named in the signature header."""
    ca_file: str | None = None
    """CA bundle to check HTTPS servers with (default: the system's)."""
    allow_plaintext: bool = False
    """Allow ``http://`` to hosts other than loopback (a trusted network only)."""
    poll_interval: float = Field(default=10.0, gt=0)
    """Seconds between two polls of a listing while it answers."""
    max_poll_interval: float = Field(default=3600.0, gt=0)
    """Longest wait between polls of a failing listing (the wait grows x1.5 per failure)."""
    listing_timeout: float = Field(default=10.0, gt=0)
    """Seconds a listing request may take."""
    timeout: float = Field(default=60.0, gt=0)
    """Seconds a method call may take before the user is told it timed out."""
    permission: str | None = "admins"
    """Group allowed to run ``rpc ...`` (router groups; ``admins``: the router's admins)."""
    method_permission: str | None = None
    """Group allowed to run the endpoints' methods (None: everybody the router lets in)."""


class CrpcSettings(BaseModel):
    """Settings of the ChatOps RPC operator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    client: ClientSettings = Field(default_factory=ClientSettings)
    """The client side (``[client]``): on by default; needs the private key."""
    server: ServerSettings | None = None
    """The server side (``[server]``): eevee's commands served over ChatOps RPC; off unless
    the table is given."""

    @model_validator(mode="after")
    def _intervals(self) -> CrpcSettings:
        c = self.client
        if c.max_poll_interval < c.poll_interval:
            raise ValueError("client.max_poll_interval must be at least client.poll_interval")
        return self
