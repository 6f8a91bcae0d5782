"""Bounded tokens: a chat-derived string of any length gives a subject token or KV key part of
at most MAX_TOKEN_LENGTH characters, deterministic, valid and (for long strings) a digest."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from nats.js.kv import _is_key_valid

from eeveepy.errors import IrreversibleTokenError, SubjectError
from eeveepy.protocol.subjects import SAFE_CHARS, Subjects
from eeveepy.protocol.tokens import (
    DIGEST_LENGTH,
    MAX_TOKEN_LENGTH,
    decode_token,
    digest,
    encode_token,
    kv_token,
)
from operators import karma, seen

# Strings around and far over the limit: pieces (any character, subject breakers, multi-byte
# and lone surrogates) repeated up to a few kilobytes.
_piece = st.text(
    st.characters() | st.sampled_from([*".*>%= \t$#!@:😀é", "\ud800"]), min_size=1, max_size=8
)
long_text = st.builds(lambda p, n: p * n, _piece, st.integers(30, 700)) | st.text(
    min_size=200, max_size=400
)
_KV_PART_RE = re.compile(r"[-_=A-Za-z0-9]+")


def _is_subject_token(t: str) -> bool:
    return bool(t) and t.isascii() and t.isprintable() and not set(t) & set(".*> \t\r\n")


@settings(max_examples=200)
@given(long_text)
def test_encode_token_is_bounded_valid_and_deterministic(s: str) -> None:
    t = encode_token(s)
    assert len(t) <= MAX_TOKEN_LENGTH
    assert _is_subject_token(t)
    assert set(t) <= SAFE_CHARS | set("%0123456789ABCDEF")
    assert encode_token(s) == t
    if "%%" not in t:
        assert decode_token(t) == s  # short enough: still exact
        return
    # The bounded form: a readable head of the string, then the digest of all of it.
    assert t.endswith("%%" + digest(s))
    with pytest.raises(IrreversibleTokenError, match="message body") as info:
        decode_token(t)
    assert info.value.readable
    assert s.startswith(info.value.readable)


@settings(max_examples=200)
@given(long_text)
def test_kv_token_is_bounded_and_a_valid_key_part(s: str) -> None:
    t = kv_token(s)
    assert len(t) <= MAX_TOKEN_LENGTH
    assert _KV_PART_RE.fullmatch(t)
    assert _is_key_valid(seen.seen_key("irc", s, s))
    assert _is_key_valid(karma.karma_key("irc", s, s))
    assert kv_token(s) == t
    if len(t) == MAX_TOKEN_LENGTH or "==" in t:
        assert t.endswith("==" + digest(s))


@settings(max_examples=200)
@given(long_text, long_text)
def test_different_long_strings_give_different_tokens(a: str, b: str) -> None:
    assume(a != b)
    assert encode_token(a) != encode_token(b)
    assert kv_token(a) != kv_token(b)


@settings(max_examples=100)
@given(long_text, _piece)
def test_strings_sharing_the_head_differ_by_their_digest(s: str, tail: str) -> None:
    a, b = encode_token(s), encode_token(s + tail)
    assume(len(b) == MAX_TOKEN_LENGTH or "%%" in b)
    assert a != b


@pytest.mark.parametrize(("unit", "size"), [("a", 1), ("é", 6), ("😀", 12), (".", 3)])
def test_the_limit_is_exact(unit: str, size: int) -> None:
    fits = unit * (MAX_TOKEN_LENGTH // size)
    assert decode_token(encode_token(fits)) == fits  # at the limit: plain and reversible
    over = fits + unit
    t = encode_token(over)
    assert "%%" in t
    assert len(t) <= MAX_TOKEN_LENGTH
    assert len(t) > MAX_TOKEN_LENGTH - size  # the head is as long as whole characters allow
    with pytest.raises(IrreversibleTokenError):
        decode_token(t)


@pytest.mark.parametrize(
    "token",
    [
        "a" * (MAX_TOKEN_LENGTH + 1),  # longer than any token
        "a" * 221 + "%%" + "0" * (DIGEST_LENGTH - 1),  # digest too short
        "a" * 221 + "%%" + "A" * DIGEST_LENGTH,  # uppercase digest
        "abc%%" + "0" * DIGEST_LENGTH,  # the encoder would not have cut so early
        "a" * 219 + "%2" + "%%" + "0" * DIGEST_LENGTH,  # the head is not a valid token
        "%%" + "0" * DIGEST_LENGTH,
    ],
)
def test_decode_rejects_malformed_bounded_tokens(token: str) -> None:
    with pytest.raises(SubjectError) as info:
        decode_token(token)
    assert not isinstance(info.value, IrreversibleTokenError)


def test_a_5_kb_room_makes_a_short_subject() -> None:
    room = "#" + "x" * 5000
    subject = Subjects().chat_in("irc", "n" * 5000, room)
    assert len(subject) <= len("eevee.chat.in.irc..") + 2 * MAX_TOKEN_LENGTH
    with pytest.raises(IrreversibleTokenError) as info:
        Subjects().parse(Subjects().chat_in("irc", "libera", room))
    assert room.startswith(info.value.readable)
    assert Subjects().command_run("c" * 5000).endswith("%%" + digest("c" * 5000))


def test_seen_and_karma_keys_of_5_kb_values() -> None:
    name = "N" * 5000
    key = seen.seen_key("irc", "libera", name)
    assert key == "seen.irc.libera." + "n" * 221 + "==" + digest(name.lower())
    assert seen.seen_key("irc", "libera", name.lower()) == key  # still case-insensitive
    assert len(karma.karma_key("irc", "libera", "é" * 5000)) <= 16 + MAX_TOKEN_LENGTH
