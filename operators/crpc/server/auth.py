"""Checking a signed ChatOps RPC request (pure but for the replay cache).

The signed URL is rebuilt from each configured base URL plus the request's path, never from
the ``Host`` header (a client could name any host there); the first base URL under which the
signature verifies with one of the keys wins. Then the nonce is used up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import rsa

from eeveepy.errors import SignatureError

from ..nonces import NonceCache
from ..signing import (
    BAD_TIMESTAMP,
    NONCE_MISSING,
    NOT_AUTHORIZED,
    WINDOW,
    check_window,
    parse_signature_header,
    signing_string,
    verify,
)

__all__ = ["MAX_NONCE", "Verifier"]

MAX_NONCE = 256
"""Longest nonce accepted (the reference client sends 44 characters)."""


class Verifier:
    """Checks requests against the base URLs and public keys of one server."""

    def __init__(
        self,
        base_urls: Sequence[str],
        keys: Sequence[rsa.RSAPublicKey],
        nonces: NonceCache,
        window: timedelta = WINDOW,
    ) -> None:
        self.base_urls = tuple(base_urls)
        self.keys = tuple(keys)
        self.nonces = nonces
        self.window = window

    def check(
        self,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        now: datetime | None = None,
    ) -> str:
        """Verify the request for ``path`` (raw, without the query) and use up its nonce.

        Returns the base URL it was signed for; raises :class:`SignatureError` saying why not.
        """
        nonce = headers.get("Chatops-Nonce", "").strip()
        if not nonce:
            raise SignatureError("a Chatops-Nonce header is required", NONCE_MISSING)
        if len(nonce) > MAX_NONCE:
            raise SignatureError(f"the Chatops-Nonce is over {MAX_NONCE} characters", NONCE_MISSING)
        timestamp = headers.get("Chatops-Timestamp", "").strip()
        if not timestamp:
            raise SignatureError("a Chatops-Timestamp header is required", BAD_TIMESTAMP)
        check_window(timestamp, now, self.window)
        header = parse_signature_header(headers.get("Chatops-Signature", ""))
        for base in self.base_urls:
            if verify(
                self.keys, signing_string(base + path, nonce, timestamp, body), header.signature
            ):
                self.nonces.use(nonce)
                return base
        tried = ", ".join(base + path for base in self.base_urls)
        raise SignatureError(
            f"the signature does not verify for {tried}: sign the URL exactly as written here "
            "(localhost and 127.0.0.1, a trailing / or a :443 all differ) with a key this "
            "server accepts",
            NOT_AUTHORIZED,
        )
