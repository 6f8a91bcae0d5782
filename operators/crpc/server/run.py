"""Starting and stopping the server: keys, TLS, the bus side, then the HTTP listener."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from structlog.typing import FilteringBoundLogger

from eeveepy.bus.ipc import Ipc
from eeveepy.errors import CrpcConfigError
from eeveepy.tls import server_context

from ..nonces import NonceCache
from ..signing import load_public_key, read_pem
from .app import PATH, make_app
from .auth import Verifier
from .bridge import Bridge
from .settings import ServerSettings

__all__ = ["NONCE_JOURNAL", "RunningServer", "start_server"]

NONCE_JOURNAL = "crpc-nonces"
"""The file of used nonces in the operator's data directory."""

STOP_TIMEOUT = 5.0
"""Seconds :meth:`RunningServer.stop` takes at most."""


@dataclass
class RunningServer:
    """A started server: where it listens, and its bounded :meth:`stop`."""

    url: str
    """Where it listens (the actual port when ``port = 0``): ``http://127.0.0.1:8087``."""
    port: int
    _runner: web.AppRunner
    _bridge: Bridge
    _stopped: bool = False

    @property
    def listing_url(self) -> str:
        """The local listing URL: :attr:`url` + ``/_chatops``."""
        return self.url + PATH

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop listening, end the calls in flight (bounded by ``timeout``), unsubscribe.
        Stopping again does nothing."""
        if self._stopped:
            return
        self._stopped = True
        try:
            async with asyncio.timeout(timeout):
                await self._runner.cleanup()
        except TimeoutError:
            pass
        finally:
            await self._bridge.stop()


def public_keys(
    settings: ServerSettings, environ: Mapping[str, str] = os.environ
) -> list[rsa.RSAPublicKey]:
    """The primary and, if configured, the alternate public key (raises CrpcConfigError)."""
    keys = []
    for file, env, what in (
        (settings.public_key_file, settings.public_key_env, "public key"),
        (settings.alt_public_key_file, settings.alt_public_key_env, "alternate public key"),
    ):
        if file is None and not env:
            continue
        source = f"the {what} ({file or '$' + str(env)})"
        keys.append(load_public_key(read_pem(file=file, env=env, environ=environ), source))
    return keys


async def start_server(
    ipc: Ipc,
    settings: ServerSettings,
    log: FilteringBoundLogger,
    *,
    environ: Mapping[str, str] = os.environ,
    data_dir: Path | None = None,
) -> RunningServer:
    """Serve eevee's commands on ``settings.host``/``port`` through the connected ``ipc``.

    ``data_dir`` (the operator's) keeps the journal of used nonces (``crpc-nonces``), so that
    a request cannot be replayed across a restart; without it they are kept in memory only.

    Raises :class:`CrpcConfigError` when a key or the TLS files cannot be read or the address
    cannot be listened on; nothing is left running then."""
    keys = public_keys(settings, environ)
    context: ssl.SSLContext | None = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        try:
            context = server_context(settings.tls_cert, settings.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise CrpcConfigError(f"cannot load tls_cert / tls_key: {exc}") from None
    bridge = Bridge(ipc, settings, log)
    verifier = Verifier(
        settings.base_urls, keys, NonceCache(journal=data_dir / NONCE_JOURNAL if data_dir else None)
    )
    runner = web.AppRunner(make_app(verifier, bridge, log), access_log=None, shutdown_timeout=1.0)
    await bridge.start()
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=context)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        await bridge.stop()
        raise CrpcConfigError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
        ) from None
    except BaseException:
        await runner.cleanup()
        await bridge.stop()
        raise
    port = int(runner.addresses[0][1])
    scheme = "https" if context else "http"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"{scheme}://{host}:{port}"
    log.info("serving commands over chatops rpc", url=url + PATH, base_urls=settings.base_urls)
    return RunningServer(url, port, runner, bridge)
