"""ChatOps RPC request signing, shared by the client and the server side (pure, no I/O but
reading a key).

A signed request carries three headers: ``Chatops-Nonce`` (random, base64),
``Chatops-Timestamp`` (ISO 8601 UTC) and ``Chatops-Signature: Signature keyid=K,signature=S``,
where S is the base64 RS256 signature (RSASSA-PKCS1-v1_5, SHA-256) of the signing string
``URL + "\\n" + nonce + "\\n" + timestamp + "\\n" + body``. PKCS#1 v1.5 is deterministic, so
the same string and key always give the same bytes (the vectors in ``tests/data/crpc`` hold
us to it).

Everything that parses what a peer sent (:func:`parse_signature_header`,
:func:`parse_timestamp`) raises :class:`~eeveepy.errors.SignatureError` and nothing else,
whatever the text; its ``code`` is the JSON-RPC error code the server answers with.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import SecretStr

from eeveepy.errors import CrpcConfigError, SignatureError

NOT_AUTHORIZED = -32800
NONCE_MISSING = -32801
BAD_SIGNATURE_HEADER = -32802
OUT_OF_WINDOW = -32803
BAD_TIMESTAMP = -32804

WINDOW = timedelta(minutes=5)
"""How far a request's timestamp may be from the server's clock, either way."""

NONCE_BYTES = 32
MAX_HEADER = 4096
"""Longer ``Chatops-*`` header values are refused unparsed (a 4096-bit key's signature is 684)."""

_DEFAULT_PORTS = {"http": 80, "https": 443}
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})",
    re.ASCII,
)


def signing_string(url: str, nonce: str, timestamp: str, body: bytes | str = b"") -> bytes:
    """The bytes that are signed: URL, nonce, timestamp and body joined by newlines (a GET's
    empty body leaves the string ending in ``\\n``)."""
    raw = body.encode() if isinstance(body, str) else body
    return f"{url}\n{nonce}\n{timestamp}\n".encode() + raw


def sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    """The base64 RS256 signature of ``message``."""
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def verify(keys: Iterable[rsa.RSAPublicKey], message: bytes, signature: str) -> bool:
    """Whether ``signature`` (base64) signs ``message`` under any of ``keys`` (the primary and
    the alternate key while keys are rolled)."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    for key in keys:
        try:
            key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return True
    return False


@dataclass(frozen=True, slots=True)
class SignatureHeader:
    """A ``Chatops-Signature`` header's value: the key's id and the base64 signature."""

    keyid: str
    signature: str

    def format(self) -> str:
        """The header's value as real peers send it: unquoted."""
        return f"Signature keyid={self.keyid},signature={self.signature}"


def parse_signature_header(value: str) -> SignatureHeader:
    """Parse ``Signature keyid=K,signature=S`` (quoted values tolerated, ``keyid`` optional).

    Raises :class:`SignatureError` (code -32802) for anything else."""
    if len(value) > MAX_HEADER:
        raise SignatureError("the Chatops-Signature header is too long", BAD_SIGNATURE_HEADER)
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "signature" or not rest.strip():
        raise SignatureError(
            "the Chatops-Signature header must read 'Signature keyid=KEYID,signature=BASE64'",
            BAD_SIGNATURE_HEADER,
        )
    items: dict[str, str] = {}
    for item in rest.split(","):
        name, eq, val = item.partition("=")
        if not eq:
            continue
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1]
        items[name.strip().lower()] = val
    signature = items.get("signature", "")
    if not signature:
        raise SignatureError(
            "the Chatops-Signature header has no signature=BASE64 item", BAD_SIGNATURE_HEADER
        )
    return SignatureHeader(items.get("keyid", ""), signature)


def format_timestamp(when: datetime | None = None) -> str:
    """``when`` (default: now) as the reference client sends it: UTC, milliseconds, ``Z``."""
    at = (when or datetime.now(UTC)).astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 ``Chatops-Timestamp`` (whole seconds or a fraction; ``Z`` or an offset) as
    an aware UTC datetime. Raises :class:`SignatureError` (code -32804) for anything else."""
    match = _TIMESTAMP.fullmatch(text.strip()) if len(text) <= 64 else None
    if match is None:
        raise SignatureError(
            f"invalid Chatops-Timestamp {text[:64]!r}: expected ISO 8601 UTC such as "
            "2026-11-22T02:42:40.755Z",
            BAD_TIMESTAMP,
        )
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int((fraction or "0").ljust(6, "0")[:6])
    try:
        offset = timedelta(0)
        if zone != "Z":
            sign_ = -1 if zone[0] == "-" else 1
            offset = sign_ * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        naive = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro
        )
        return (naive - offset).replace(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise SignatureError(f"invalid Chatops-Timestamp {text!r}: {exc}", BAD_TIMESTAMP) from exc


def check_window(text: str, now: datetime | None = None, window: timedelta = WINDOW) -> datetime:
    """Parse ``text`` and refuse it (code -32803) unless within ``window`` of ``now``."""
    when = parse_timestamp(text)
    at = now or datetime.now(UTC)
    if abs(when - at) > window:
        minutes = window.total_seconds() / 60
        raise SignatureError(
            f"Chatops-Timestamp {text} is not within {minutes:g} minutes of the server's time "
            f"{format_timestamp(at)}: check the clocks of both hosts (NTP)",
            OUT_OF_WINDOW,
        )
    return when


def new_nonce() -> str:
    """A fresh nonce: 32 random bytes, base64 (as the reference client sends)."""
    return base64.b64encode(secrets.token_bytes(NONCE_BYTES)).decode()


def sign_headers(
    key: rsa.RSAPrivateKey,
    keyid: str,
    url: str,
    body: bytes | str = b"",
    *,
    nonce: str | None = None,
    timestamp: str | None = None,
) -> dict[str, str]:
    """The three ``Chatops-*`` headers of a request to ``url`` with ``body``."""
    nonce = nonce or new_nonce()
    timestamp = timestamp or format_timestamp()
    signature = sign(key, signing_string(url, nonce, timestamp, body))
    return {
        "Chatops-Nonce": nonce,
        "Chatops-Timestamp": timestamp,
        "Chatops-Signature": SignatureHeader(keyid, signature).format(),
    }


def normalise_base_url(url: str) -> str:
    """A base URL as the server rebuilds signed URLs from it: trailing ``/`` removed.

    Raises :class:`CrpcConfigError` for what would silently break every signature: no
    http(s) scheme or host, a query, or a default port written out (``:443``), since clients
    sign the URL as they were given it."""
    text = url.strip()
    parts = urlsplit(text)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise CrpcConfigError(f"base URL {url!r} must be http://HOST[:PORT][/PATH] or https://...")
    if parts.query or parts.fragment or parts.username is not None:
        raise CrpcConfigError(f"base URL {url!r} must not carry a query, fragment or user")
    try:
        port = parts.port
    except ValueError as exc:
        raise CrpcConfigError(f"base URL {url!r}: {exc}") from exc
    if port == _DEFAULT_PORTS[parts.scheme]:
        raise CrpcConfigError(
            f"base URL {url!r} names the default port :{port}: write it without the port, as "
            "clients do, or every signature check fails"
        )
    return text.rstrip("/")


def read_pem(
    *,
    file: Path | str | None = None,
    env: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> SecretStr:
    """A key's PEM text from ``file`` or the environment variable ``env`` (the file wins),
    kept secret: it prints as ``**********``."""
    if file:
        try:
            return SecretStr(Path(file).read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise CrpcConfigError(f"cannot read the key file {file}: {exc}") from exc
    if env:
        text = environ.get(env, "")
        if not text.strip():
            raise CrpcConfigError(f"the environment variable {env} holding the key is not set")
        return SecretStr(text)
    raise CrpcConfigError("no key configured: give a key file or an environment variable")


def load_private_key(pem: SecretStr, source: str = "the private key") -> rsa.RSAPrivateKey:
    """An RSA private key from unencrypted PEM text; errors name ``source``, never the key."""
    try:
        key = serialization.load_pem_private_key(pem.get_secret_value().encode(), None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CrpcConfigError(
            f"{source} is not an unencrypted PEM private key "
            "(make one with: openssl genpkey -algorithm RSA -out key.pem)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CrpcConfigError(f"{source} is not an RSA key (ChatOps RPC signs with RS256)")
    return key


def load_public_key(pem: SecretStr | str, source: str = "the public key") -> rsa.RSAPublicKey:
    """An RSA public key from PEM text (``BEGIN PUBLIC KEY`` or ``BEGIN RSA PUBLIC KEY``)."""
    text = pem.get_secret_value() if isinstance(pem, SecretStr) else pem
    try:
        key = serialization.load_pem_public_key(text.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CrpcConfigError(
            f"{source} is not a PEM public key "
            "(make one with: openssl rsa -in key.pem -pubout -out key.pub.pem)"
        ) from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise CrpcConfigError(f"{source} is not an RSA key (ChatOps RPC verifies RS256)")
    return key
