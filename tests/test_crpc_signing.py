"""ChatOps RPC signing (operators/crpc/signing.py): the published vectors byte for byte, the
header and timestamp formats, base URLs, keys, and fuzzed peer input.

Pure functions, no sockets; tests/test_crpc_server.py checks them over real HTTP.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from eeveepy.errors import ConfigError, CrpcConfigError, SignatureError
from operators.crpc import signing
from operators.crpc.signing import SignatureHeader

DATA = Path(__file__).resolve().parent / "data" / "crpc"


def _vectors() -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads((DATA / "vectors.json").read_text())
    return loaded


def private_key(name: str = "sample_client") -> rsa.RSAPrivateKey:
    """A test key pair's private half (``sample_client`` or ``alternate``)."""
    return signing.load_private_key(signing.read_pem(file=DATA / f"{name}_private.pem"))


def public_key(name: str = "sample_client") -> rsa.RSAPublicKey:
    """A test key pair's public half."""
    return signing.load_public_key(signing.read_pem(file=DATA / f"{name}_public.pem"))


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: str(v["name"]))
def test_vectors_reproduce_byte_for_byte(vector: dict[str, Any]) -> None:
    message = signing.signing_string(
        vector["url"], vector["nonce"], vector["timestamp"], vector["body"]
    )
    assert message == vector["signing_string"].encode()
    signature = signing.sign(private_key(), message)
    assert signature == vector["signature_b64"]
    assert SignatureHeader("rsakey1", signature).format() == vector["header"]
    assert signing.verify([public_key()], message, signature)
    assert not signing.verify([public_key("alternate")], message, signature)
    assert signing.verify([public_key("alternate"), public_key()], message, signature)
    headers = signing.sign_headers(
        private_key(),
        "rsakey1",
        vector["url"],
        vector["body"].encode(),
        nonce=vector["nonce"],
        timestamp=vector["timestamp"],
    )
    assert headers == {
        "Chatops-Nonce": vector["nonce"],
        "Chatops-Timestamp": vector["timestamp"],
        "Chatops-Signature": vector["header"],
    }


def test_a_changed_byte_or_a_bad_base64_does_not_verify() -> None:
    vector = _vectors()[0]
    message = vector["signing_string"].encode()
    assert not signing.verify([public_key()], message + b"x", vector["signature_b64"])
    assert not signing.verify([public_key()], message, "not base64!")
    assert not signing.verify([public_key()], message, "")
    assert not signing.verify([], message, vector["signature_b64"])


def test_signature_header_parses_unquoted_quoted_and_refuses_the_rest() -> None:
    assert signing.parse_signature_header("Signature keyid=k1,signature=ab+/c==") == (
        SignatureHeader("k1", "ab+/c==")
    )
    assert signing.parse_signature_header('Signature keyid="k1", signature="ab=="') == (
        SignatureHeader("k1", "ab==")
    )
    assert signing.parse_signature_header("signature signature=xyz") == SignatureHeader("", "xyz")
    for bad in ["", "Signature", "Bearer keyid=k,signature=x", "Signature keyid=k", "x" * 5000]:
        with pytest.raises(SignatureError) as caught:
            signing.parse_signature_header(bad)
        assert caught.value.code == signing.BAD_SIGNATURE_HEADER


def test_timestamps_whole_seconds_milliseconds_and_offsets() -> None:
    at = datetime(2017, 5, 11, 19, 15, 23, 123000, tzinfo=UTC)
    assert signing.format_timestamp(at) == "2017-05-11T19:15:23.123Z"
    assert signing.parse_timestamp("2017-05-11T19:15:23.123Z") == at
    assert signing.parse_timestamp("2017-05-11T19:15:23Z") == at.replace(microsecond=0)
    assert signing.parse_timestamp("2017-05-11T21:15:23.123+02:00") == at
    assert signing.parse_timestamp(signing.format_timestamp(at)) == at
    assert signing.format_timestamp().endswith("Z")
    for bad in ["", "yesterday", "2017-05-11 19:15:23Z", "2017-13-11T19:15:23Z", "2017-05-11"]:
        with pytest.raises(SignatureError) as caught:
            signing.parse_timestamp(bad)
        assert caught.value.code == signing.BAD_TIMESTAMP


def test_the_window_is_five_minutes_either_way() -> None:
    now = datetime(2026, 11, 22, 2, 42, 40, tzinfo=UTC)
    for offset in (timedelta(minutes=4, seconds=59), -timedelta(minutes=4, seconds=59)):
        signing.check_window(signing.format_timestamp(now + offset), now)
    for offset in (timedelta(minutes=6), -timedelta(minutes=6)):
        with pytest.raises(SignatureError, match="within 5 minutes") as caught:
            signing.check_window(signing.format_timestamp(now + offset), now)
        assert caught.value.code == signing.OUT_OF_WINDOW


def test_nonces_are_32_random_bytes() -> None:
    nonces = {signing.new_nonce() for _ in range(50)}
    assert len(nonces) == 50
    assert all(len(base64.b64decode(n)) == 32 for n in nonces)


def test_base_urls_lose_the_trailing_slash_and_refuse_default_ports() -> None:
    assert signing.normalise_base_url("http://test.host/") == "http://test.host"
    assert signing.normalise_base_url(" https://h:8443/x/ ") == "https://h:8443/x"
    assert signing.normalise_base_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    with pytest.raises(CrpcConfigError, match="default port :443"):
        signing.normalise_base_url("https://example.com:443")
    with pytest.raises(CrpcConfigError, match="default port :80"):
        signing.normalise_base_url("http://example.com:80/")
    for bad in ["example.com", "ftp://h", "http://", "http://h?x=1", "http://h:99999"]:
        with pytest.raises(ConfigError):
            signing.normalise_base_url(bad)


def test_keys_from_a_file_or_the_environment_never_shown(tmp_path: Path) -> None:
    pem = (DATA / "sample_client_private.pem").read_text()
    secret = signing.read_pem(env="RPC_PRIVATE_KEY", environ={"RPC_PRIVATE_KEY": pem})
    assert "PRIVATE" not in repr(secret)
    assert "PRIVATE" not in str(secret)
    key = signing.load_private_key(secret)
    assert key.public_key().public_numbers() == public_key().public_numbers()
    with pytest.raises(CrpcConfigError, match="RPC_PRIVATE_KEY"):
        signing.read_pem(env="RPC_PRIVATE_KEY", environ={})
    with pytest.raises(CrpcConfigError, match="cannot read"):
        signing.read_pem(file=tmp_path / "missing.pem")
    with pytest.raises(CrpcConfigError, match="no key configured"):
        signing.read_pem()
    garbage = SecretStr("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(CrpcConfigError, match="not an unencrypted PEM") as caught:
        signing.load_private_key(garbage, "RPC_PRIVATE_KEY")
    assert "AAAA" not in str(caught.value)
    with pytest.raises(CrpcConfigError, match="not a PEM public key"):
        signing.load_public_key(pem)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.builds(
            lambda a, b, c: f"Signature {a}={b},{c}",
            st.text(max_size=20),
            st.text(max_size=40),
            st.text(max_size=40),
        ),
    )
)
def test_fuzzed_signature_headers_raise_only_signature_error(value: str) -> None:
    parsed: SignatureHeader | None = None
    try:
        parsed = signing.parse_signature_header(value)
        code = 0
    except SignatureError as exc:
        code = exc.code
    assert code == signing.BAD_SIGNATURE_HEADER or (parsed is not None and parsed.signature)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(max_size=80),
        st.from_regex(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,12})?(Z|[+-]\d{2}:\d{2})?\Z"),
    )
)
def test_fuzzed_timestamps_raise_only_signature_error(value: str) -> None:
    parsed: datetime | None = None
    try:
        parsed = signing.parse_timestamp(value)
        code = 0
        signing.check_window(value)
    except SignatureError as exc:
        code = exc.code
    assert code in (0, signing.BAD_TIMESTAMP, signing.OUT_OF_WINDOW)
    assert (parsed is None) == (code == signing.BAD_TIMESTAMP)
    assert parsed is None or parsed.tzinfo is UTC
