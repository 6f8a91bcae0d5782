"""Signed HTTP requests to ChatOps RPC servers, and which URLs the client may call.

Every request, the listing's ``GET`` and a method's ``POST``, carries the ``Chatops-Nonce``,
``Chatops-Timestamp`` (milliseconds, UTC) and ``Chatops-Signature`` headers made by
:func:`~operators.crpc.signing.sign_headers` over the URL exactly as it is called. HTTPS is the
default (the system's CAs or ``ca_file``); plain HTTP is refused unless the host is a loopback
address or ``allow_plaintext`` is set (:func:`check_url`). Answers are read up to
:data:`MAX_BODY` bytes; a request that takes longer than its timeout ends with
:attr:`Answer.timed_out`, never hangs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import aiohttp
from cryptography.hazmat.primitives.asymmetric import rsa

from eeveepy.errors import CrpcConfigError, EndpointError
from eeveepy.tls import client_context

from .signing import normalise_base_url, sign_headers

__all__ = ["MAX_BODY", "Answer", "Transport", "check_url", "is_loopback"]

MAX_BODY: Final = 1 << 20
"""Largest answer (bytes) read from a server; more is cut off."""

_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(host: str) -> bool:
    """``host`` is this machine: ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host.lower().rstrip(".") in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_plaintext: bool) -> str:
    """The listing URL as the client will call and sign it (a trailing ``/`` removed), or
    :class:`EndpointError` saying why it cannot be used."""
    try:
        clean = normalise_base_url(url)
    except CrpcConfigError as exc:
        raise EndpointError(str(exc).replace("base URL", "URL")) from None
    parts = urlsplit(clean)
    if parts.scheme == "http" and not allow_plaintext and not is_loopback(parts.hostname or ""):
        raise EndpointError(
            f"{clean} is plain HTTP to another host: use https:// (or set allow_plaintext = "
            "true in the crpc settings, if the network is trusted)"
        )
    return clean


@dataclass(frozen=True)
class Answer:
    """What a server answered: HTTP ``status`` and ``body``, or the transport ``error``."""

    status: int | None = None
    body: bytes = b""
    error: str | None = None
    timed_out: bool = False

    def short(self, n: int = 150) -> str:
        """The answer on one line, for ``rpc list`` and logs."""
        if self.error is not None:
            return self.error
        text = self.body[:n].decode("utf-8", "replace").replace("\n", "\\n")
        return f"HTTP {self.status}: {text}"


class Transport:
    """One HTTP client session signing with one key; :meth:`close` ends it (bounded)."""

    def __init__(self, key: rsa.RSAPrivateKey, keyid: str, *, ca_file: str | None = None) -> None:
        self._key = key
        self._keyid = keyid
        self._ssl: ssl.SSLContext = client_context(ca_file=ca_file)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=32),
                headers={"Accept": "application/json", "User-Agent": "eeveepy-crpc"},
            )
        return self._session

    async def close(self) -> None:
        """Close the session (open connections are dropped)."""
        session, self._session = self._session, None
        if session is not None:
            await asyncio.wait_for(session.close(), 5.0)

    async def get(self, url: str, timeout: float) -> Answer:
        """A signed ``GET url`` (a listing)."""
        return await self._call("GET", url, b"", timeout)

    async def post(self, url: str, body: bytes, timeout: float) -> Answer:
        """A signed ``POST url`` of the JSON ``body`` (a method call)."""
        return await self._call("POST", url, body, timeout)

    async def _call(self, verb: str, url: str, body: bytes, timeout: float) -> Answer:
        headers = sign_headers(self._key, self._keyid, url, body)
        if verb == "POST":
            headers["Content-Type"] = "application/json"
        deadline = asyncio.timeout(timeout)
        try:
            async with (
                deadline,
                self._open().request(
                    verb, url, data=body if verb == "POST" else None, headers=headers
                ) as resp,
            ):
                data = await resp.content.read(MAX_BODY)
                return Answer(status=resp.status, body=data)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            # aiohttp may turn the deadline's cancellation into an error of its own
            if isinstance(exc, TimeoutError) or deadline.expired():
                return Answer(error=f"no answer within {timeout:g} s", timed_out=True)
            return Answer(error=f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc))
