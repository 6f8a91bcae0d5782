"""Connecting to NATS: the embedded server's URL or an external one with its credentials."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import structlog
from nats.aio.client import Client as NatsClient
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from eeveepy.bus.natsadapter import EeveeClient
from eeveepy.errors import BusError
from eeveepy.tls import client_context


class BusConfig(BaseModel):
    """Where the bus is and how to log in. No ``url`` means the embedded server."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str | None = Field(default=None, description="nats:// or tls:// URL; none = embedded.")
    servers: list[str] = Field(
        default_factory=list, description="More seed URLs of the same cluster, tried in turn."
    )
    user: str | None = None
    """User name to log in with (with ``password``)."""
    password: str | None = None
    """Password of ``user``."""
    token: str | None = None
    """A token to log in with, instead of a user and password."""
    creds_file: Path | None = Field(default=None, description="NATS .creds file (JWT + nkey).")
    nkey_seed: Path | None = Field(
        default=None, description="File holding an nkey seed (SU...) to log in with."
    )
    users_file: Path | None = Field(
        default=None,
        description="Secrets of eevee's users on this server, made by `eevee config "
        "nats-permissions`: then each operator logs in as its own user.",
    )
    tls_ca: Path | None = None
    """CA certificate (PEM) to verify the server with; default: the system's."""
    tls_cert: Path | None = None
    """Client certificate (PEM), for servers that require mutual TLS."""
    tls_key: Path | None = None
    """The client certificate's key (PEM)."""
    tls_verify: bool = True
    """Verify the server's certificate; false is for testing only."""
    connect_timeout: float = Field(default=5.0, gt=0)
    """Seconds to wait for the first connection to the bus."""
    max_payload: int | None = Field(
        default=None, gt=0, description="Embedded server's max_payload in bytes (default 1 MiB)."
    )
    replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        description="Copies of each stream and bucket eevee creates: 1 on a single server, "
        "3 on a NATS cluster (needs an external bus).",
    )

    @model_validator(mode="after")
    def _replicas_need_a_cluster(self) -> BusConfig:
        if self.url is None and self.replicas > 1:
            raise PydanticCustomError(
                "eevee_replicas",
                "replicas = {replicas} needs a NATS cluster: set [bus] url (and servers) to "
                "it, or replicas = 1 for the embedded server",
                {"replicas": self.replicas},
            )
        return self

    @property
    def seeds(self) -> list[str]:
        """Every URL to try: ``url`` then ``servers`` (each may hold several, comma-separated)."""
        return split_urls([self.url or "", *self.servers])


def split_urls(urls: list[str]) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``: a bus URL may list a cluster's seeds."""
    return [u.strip() for group in urls for u in group.split(",") if u.strip()]


async def connect(
    cfg: BusConfig,
    *,
    name: str,
    url: str | None = None,
    user: str | None = None,
    password: str | None = None,
    reconnect: bool = True,
    inbox_prefix: str | None = None,
    on_disconnect: Callable[[], Awaitable[None]] | None = None,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
) -> NatsClient:
    """Connect (bounded by ``cfg.connect_timeout``) and return the nats-py client.

    ``url``/``user``/``password`` override the configuration (the supervisor hands each operator
    its own credentials); ``inbox_prefix`` is where replies to this client's requests go (an
    operator may only receive on its own, ``EEVEE_INBOX_PREFIX``). After the first connect,
    lost connections are retried forever.
    """
    log = structlog.get_logger("eeveepy.bus")
    servers = split_urls([url, *cfg.servers]) if url else cfg.seeds
    if not servers:
        raise BusError("no bus URL: start `eevee up` or give --nats-url / EEVEE_NATS_URL")

    # While the connection is down nats-py reports every failed reconnect attempt (one each
    # reconnect_time_wait): say the first, count the others, and sum them up when it is back.
    # Before the first connect succeeds, the BusError raised below says it all.
    outage = {"down": False, "errors": 0, "established": False}

    async def error_cb(exc: Exception) -> None:
        outage["errors"] += 1
        if not outage["established"]:
            return
        if not outage["down"] or outage["errors"] == 1:
            log.warning("bus error", error=str(exc) or type(exc).__name__)

    async def disconnected_cb() -> None:
        if not outage["down"] and not nc.is_closed:  # closed on purpose: nothing to say
            outage.update(down=True, errors=0)
            log.info("bus disconnected: reconnecting")
        if on_disconnect:
            await on_disconnect()

    async def reconnected_cb() -> None:
        log.info("bus reconnected", failed_attempts=outage["errors"])
        outage.update(down=False, errors=0)
        if on_reconnect:
            await on_reconnect()

    options: dict[str, Any] = {
        "servers": servers,
        "name": name,
        "connect_timeout": cfg.connect_timeout,
        "allow_reconnect": reconnect,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "error_cb": error_cb,
        "disconnected_cb": disconnected_cb,
        "reconnected_cb": reconnected_cb,
    }
    user = user or cfg.user
    password = password or cfg.password
    if user:
        options["user"] = user
        options["password"] = password or ""
    if inbox_prefix:
        options["inbox_prefix"] = inbox_prefix
    if cfg.token:
        options["token"] = cfg.token
    if cfg.creds_file:
        options["user_credentials"] = str(cfg.creds_file)
    if cfg.nkey_seed:
        options["nkeys_seed"] = str(cfg.nkey_seed)
    if cfg.tls_ca or cfg.tls_cert or any(u.startswith("tls://") for u in servers):
        options["tls"] = client_context(
            ca_file=cfg.tls_ca, verify=cfg.tls_verify, cert=cfg.tls_cert, key=cfg.tls_key
        )
    nc = EeveeClient()
    try:
        # With reconnects allowed nats-py keeps retrying a refused first connect: bound it.
        await asyncio.wait_for(nc.connect(**options), timeout=cfg.connect_timeout + 1)
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        await _close_quietly(nc)
        reason = str(exc) or type(exc).__name__
        raise BusError(f"cannot connect to the bus at {', '.join(servers)}: {reason}") from None
    outage.update(established=True, errors=0)
    return nc


async def _close_quietly(nc: NatsClient) -> None:
    try:
        await asyncio.wait_for(nc.close(), timeout=2)
    except Exception:  # it never connected: nothing to close
        pass


async def barrier(nc: NatsClient) -> None:
    """Make sure the server has processed everything sent so far on ``nc``.

    nats-py's ``flush()`` can overtake commands still in its own buffer, so one flush is not
    a barrier; a second one after the first round trip is.
    """
    await nc.flush()
    await nc.flush()
