"""The ``[server]`` table of the ChatOps RPC operator: serving eevee's commands over HTTP.

Checked when the settings load, so a base URL that would break every signature (a default
port written out, no scheme) or half a TLS pair is a configuration error at start, not a 403
at the first call. Keys are read at start (:func:`~operators.crpc.server.start_server`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from eeveepy.errors import CrpcConfigError
from operators.crpc.signing import normalise_base_url

__all__ = ["ServerSettings"]

_TOKEN: Final = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class ServerSettings(BaseModel):
    """Where and how eevee's own commands are served as a ChatOps RPC endpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(default="127.0.0.1", description="Address to listen on (loopback).")
    port: int = Field(default=8087, ge=0, le=65535, description="Port (0: any free port).")
    base_urls: list[str] = Field(
        min_length=1,
        description="The URLs clients call, without /_chatops (signatures are checked against "
        "each; the Host header is never used): http://chatops.example.org:8087",
    )
    public_key_file: Path | None = Field(default=None, description="The client's public key.")
    public_key_env: str | None = Field(
        default=None, description="Environment variable holding the client's public key (PEM)."
    )
    alt_public_key_file: Path | None = Field(
        default=None, description="A second accepted public key, while keys are rolled."
    )
    alt_public_key_env: str | None = None
    """Environment variable holding that second key (PEM)."""
    tls_cert: Path | None = Field(default=None, description="Serve HTTPS with this certificate.")
    tls_key: Path | None = Field(default=None, description="The certificate's private key.")
    network: str = Field(
        default="rpc",
        description="Network of the crpc platform: callers are crpc:<network>:<user> to the "
        "router's permissions.",
    )
    namespace: str = Field(default="eevee", description="The listing's namespace.")
    help: str | None = Field(default=None, description="The listing's help text.")
    error_response: str | None = Field(
        default=None, description="What clients show when a call fails in transport."
    )
    timeout: float = Field(
        default=10.0, gt=0, description="Seconds to wait for a command's first answer."
    )
    quiet: float = Field(
        default=0.3, ge=0, description="Seconds without a further reply that end an answer."
    )
    max_body: int = Field(
        default=64 * 1024, ge=1024, description="Largest request body accepted, in bytes."
    )

    @field_validator("base_urls")
    @classmethod
    def _normalise(cls, urls: list[str]) -> list[str]:
        try:
            return [normalise_base_url(u) for u in urls]
        except CrpcConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("network")
    @classmethod
    def _network(cls, value: str) -> str:
        if not _TOKEN.fullmatch(value):
            raise ValueError("network must be lowercase letters, digits, '-' or '_'")
        return value

    @model_validator(mode="after")
    def _pairs(self) -> ServerSettings:
        if self.public_key_file is None and not self.public_key_env:
            raise ValueError("give the client's public key: public_key_file or public_key_env")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together (or neither: plain HTTP)")
        return self
