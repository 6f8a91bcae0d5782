"""TLS contexts: one client builder (the bus, chat connectors, HTTP clients) and one for servers."""

from __future__ import annotations

import ssl
from pathlib import Path


def client_context(
    *,
    ca_file: str | Path | None = None,
    verify: bool = True,
    cert: str | Path | None = None,
    key: str | Path | None = None,
) -> ssl.SSLContext:
    """A client context: the system's CAs (or ``ca_file``), an optional client certificate
    (``cert`` and ``key``, e.g. for SASL EXTERNAL or mutual TLS), and ``verify=False`` to skip
    checking the server (testing only)."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if cert:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def server_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A server context presenting ``cert`` (a PEM chain) with its private ``key``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx
