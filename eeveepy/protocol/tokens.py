"""Chat-derived strings as subject tokens and KV key parts: escaped, canonical and bounded.

Two escapings, one per place a chat string goes:

* :func:`encode_token`, for subject tokens (``network``, ``room``, ``command`` of
  :class:`~eeveepy.subjects.Subjects`): ASCII letters, digits and ``-_#!@:+=~`` stay as they
  are, every other character becomes its UTF-8 bytes written as ``%XX`` (uppercase hex), the
  empty string a lone ``%``. :func:`decode_token` is its exact inverse and accepts nothing
  else, so every string has exactly one token.
* :func:`kv_token`, for parts of JetStream KV keys (which allow fewer characters):
  ``[A-Za-z0-9_-]`` kept, other bytes ``=XX``, the empty string a lone ``=``.

**Bounded.** A chat line can carry a display name, room or thing of several kilobytes. Put
into a subject or a key as it is, it would make the ``PUB`` line longer than the server's
control line (4096 bytes by default), and nats-server closes a connection that sends one. So
no token is longer than :data:`MAX_TOKEN_LENGTH` characters:

* a string whose escaped form fits is written as above (reversible);
* a longer one becomes ``<head><marker><digest>``: ``head`` is the escaped form of the longest
  run of whole leading characters that fits, ``marker`` a pair of characters no escaped form
  contains (``%%`` in subject tokens, ``==`` in KV key parts) and ``digest`` the first
  :data:`DIGEST_LENGTH` lowercase hex digits of the SHA-256 of the whole string's UTF-8 bytes
  (lone surrogates via ``surrogatepass``).

The bounded form is deterministic (the same string always gives the same token, so keys and
subjects still name the same thing) but not reversible: :func:`decode_token` raises
:class:`~eeveepy.errors.IrreversibleTokenError` for it, and receivers take the value from the
message body. Two long strings share a token only if their 128-bit digests collide.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Final

from eeveepy.errors import IrreversibleTokenError, SubjectError

__all__ = [
    "DIGEST_LENGTH",
    "KV_MARKER",
    "MAX_TOKEN_LENGTH",
    "SAFE_CHARS",
    "bounded",
    "decode_token",
    "digest",
    "encode_token",
    "kv_token",
    "split_bounded",
]

MAX_TOKEN_LENGTH: Final = 255
"""Longest subject token or KV key part built from a chat-derived value."""

DIGEST_LENGTH: Final = 32
"""Hex digits of SHA-256 kept in a bounded token (128 bits)."""

KV_MARKER: Final = "=="
"""Separates head and digest in a bounded :func:`kv_token` (``=`` is always followed by two
uppercase hex digits otherwise)."""

SAFE_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_#!@:+=~"
)
"""Characters :func:`encode_token` keeps as they are; everything else is ``%XX``-escaped."""

# Inside a character class: "-" first so it is literal.
_SAFE_CLASS: Final = r"-A-Za-z0-9_#!@:+=~"
_SAFE_RE: Final = re.compile(f"[{_SAFE_CLASS}]+")
_ENCODED_RE: Final = re.compile(f"(?:[{_SAFE_CLASS}]|%[0-9A-F]{{2}})+")
# "%XX" escapes of characters that must stay literal; their presence makes a token non-canonical.
_ESCAPED_SAFE_RE: Final = re.compile(
    "%(?:" + "|".join(sorted(f"{ord(c):02X}" for c in SAFE_CHARS)) + ")"
)
_ESCAPE_RE: Final = re.compile("%([0-9A-F]{2})")
# One unit of a token: an escape (one byte) or a literal character (one byte once validated).
_UNIT_RE: Final = re.compile("%[0-9A-F]{2}|.", re.DOTALL)
# Byte value -> what encode_token writes for it.
_BYTE_TO_TEXT: Final = tuple(chr(b) if chr(b) in SAFE_CHARS else f"%{b:02X}" for b in range(256))
_HEX_DIGITS: Final = frozenset("0123456789ABCDEF")
# Separates head and digest in a bounded token: "%" is otherwise always followed by hex.
_BOUNDED_MARKER: Final = "%%"
_DIGEST_RE: Final = re.compile(f"[0-9a-f]{{{DIGEST_LENGTH}}}")
_KV_SAFE: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def digest(value: str) -> str:
    """The first :data:`DIGEST_LENGTH` hex digits of SHA-256 over ``value``'s UTF-8 bytes."""
    raw = value.encode("utf-8", "surrogatepass")
    return hashlib.sha256(raw).hexdigest()[:DIGEST_LENGTH]


def bounded(value: str, escaped: str, escape_char: Callable[[str], str], marker: str) -> str:
    """``escaped`` (the escaped form of ``value``) if it fits, else its bounded form.

    ``escape_char`` escapes one character exactly as the whole escaping does, so the head is a
    valid escaped string that ends on a character boundary.
    """
    if len(escaped) <= MAX_TOKEN_LENGTH:
        return escaped
    budget = MAX_TOKEN_LENGTH - len(marker) - DIGEST_LENGTH
    head: list[str] = []
    used = 0
    for ch in value:
        part = escape_char(ch)
        if used + len(part) > budget:
            break
        head.append(part)
        used += len(part)
    return "".join(head) + marker + digest(value)


def split_bounded(token: str, marker: str) -> tuple[str, str] | None:
    """``(head, digest)`` if ``token`` has the shape of a bounded token, else None.

    Only the shape is checked (length, marker, digest, a head long enough that the encoder
    would have cut there); the caller checks that the head is a valid escaped string.
    """
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    head, sep, tail = token.rpartition(marker)
    if not sep or _DIGEST_RE.fullmatch(tail) is None:
        return None
    budget = MAX_TOKEN_LENGTH - len(marker) - DIGEST_LENGTH
    # The encoder stops only when the next character (at most 4 bytes, 12 characters
    # escaped) does not fit, so a head is never much shorter than the budget.
    if not budget - 12 < len(head) <= budget:
        return None
    return head, tail


def _kv_char(ch: str) -> str:
    if ch in _KV_SAFE:
        return ch
    return "".join(f"={b:02X}" for b in ch.encode("utf-8", "surrogatepass"))


def kv_token(value: str) -> str:
    """``value`` as one part of a JetStream KV key: ``[A-Za-z0-9_-]`` kept, other bytes ``=XX``.

    KV keys allow only ``-/_=.`` and ASCII letters and digits, and ``.`` separates parts, so
    every other UTF-8 byte (``=`` included) is written ``=`` and two uppercase hex digits; the
    empty string is a lone ``=``. Different strings give different tokens. A value whose
    escaped form is longer than :data:`MAX_TOKEN_LENGTH` becomes its bounded form
    ``<head>==<digest>`` (see the module docstring), never longer than that.
    """
    if not value:
        return "="
    return bounded(value, "".join(map(_kv_char, value)), _kv_char, KV_MARKER)


def encode_token(s: str) -> str:
    """Encode any string as one canonical NATS subject token.

    Characters in :data:`SAFE_CHARS` are kept; every other character is written as its UTF-8
    bytes (lone surrogates included, via ``surrogatepass``), each as ``%XX`` in uppercase hex.
    The empty string encodes as ``"%"``. The result is never empty and never contains ``.``,
    ``*``, ``>``, whitespace or non-ASCII characters. An encoding longer than
    :data:`MAX_TOKEN_LENGTH` is replaced by its bounded form ``<head>%%<digest>`` (the encoding
    of the leading characters that fit, then 32 hex digits of the SHA-256 of ``s``), so a
    subject never grows with chat input.

    >>> encode_token("#foo.bar")
    '#foo%2Ebar'
    """
    if _SAFE_RE.fullmatch(s):
        if len(s) <= MAX_TOKEN_LENGTH:
            return s
        return bounded(s, s, _escape_char, _BOUNDED_MARKER)
    if not s:
        return "%"
    return bounded(s, _escape(s), _escape_char, _BOUNDED_MARKER)


def _escape(s: str) -> str:
    return "".join(map(_BYTE_TO_TEXT.__getitem__, s.encode("utf-8", "surrogatepass")))


def _escape_char(ch: str) -> str:
    return ch if ch in SAFE_CHARS else _escape(ch)


def decode_token(t: str) -> str:
    """Decode a token made by :func:`encode_token`; the exact inverse.

    Strict: raises :class:`SubjectError` for anything :func:`encode_token` could not have
    produced (empty tokens, stray unsafe characters, short, bad or lowercase hex escapes,
    escapes of safe characters, a ``%`` alone inside a longer token, invalid UTF-8). Hence
    ``decode_token(t)`` succeeds if and only if ``encode_token(decode_token(t)) == t``.

    A bounded token (``<head>%%<digest>``, what :func:`encode_token` makes of a long string)
    cannot be decoded: it raises :class:`IrreversibleTokenError`, whose ``readable`` is the
    decoded head, so a receiver can show it but takes the value itself from the message body.

    >>> decode_token("#foo%2Ebar")
    '#foo.bar'
    """
    if _SAFE_RE.fullmatch(t) and len(t) <= MAX_TOKEN_LENGTH:
        return t
    if t == "%":
        return ""
    if len(t) > MAX_TOKEN_LENGTH:
        raise SubjectError(
            f"invalid token {t[:40]!r}...: {len(t)} characters, over the limit of "
            f"{MAX_TOKEN_LENGTH} (longer strings are encoded in their bounded form)"
        )
    parts = split_bounded(t, _BOUNDED_MARKER)
    if parts is not None:
        try:
            head = decode_token(parts[0])
        except SubjectError as exc:
            raise SubjectError(f"invalid bounded token {t!r}: its head is invalid: {exc}") from None
        raise IrreversibleTokenError(
            f"token {t!r} is the bounded form of a string longer than {MAX_TOKEN_LENGTH} "
            "encoded characters (its head, then a digest): it cannot be decoded; take the "
            "value from the message body",
            head,
        )
    if _ENCODED_RE.fullmatch(t) is None:
        raise SubjectError(_explain_bad_token(t))
    bad = _ESCAPED_SAFE_RE.search(t)
    if bad is not None:
        char = chr(int(bad.group()[1:], 16))
        raise SubjectError(
            f"invalid token {t!r}: escape {bad.group()!r} at index {bad.start()} encodes the "
            f"safe character {char!r}, which must appear as itself"
        )
    # Every unit is now one ASCII byte: a literal safe character or an escape.
    raw = _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), t).encode("latin-1")
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        units = list(_UNIT_RE.finditer(t))
        where = units[exc.start]
        raise SubjectError(
            f"invalid token {t!r}: the bytes starting at {where.group()!r} (index "
            f"{where.start()}) are not valid UTF-8 ({exc.reason})"
        ) from None


def _explain_bad_token(t: str) -> str:
    """Say what is wrong, and where, with a token that does not match the encoded grammar."""
    if not t:
        return "invalid token '': tokens are never empty (the empty string encodes as '%')"
    i = 0
    while i < len(t):
        c = t[i]
        if c in SAFE_CHARS:
            i += 1
            continue
        if c != "%":
            return (
                f"invalid token {t!r}: character {c!r} at index {i} must be written as a %XX escape"
            )
        digits = t[i + 1 : i + 3]
        if len(digits) < 2:
            return (
                f"invalid token {t!r}: escape at index {i} is cut short (a '%' alone is only "
                "valid as the whole token, meaning the empty string)"
            )
        if not set(digits) <= _HEX_DIGITS:
            if set(digits.upper()) <= _HEX_DIGITS:
                return (
                    f"invalid token {t!r}: escape '%{digits}' at index {i} uses lowercase "
                    "hex; it must be uppercase"
                )
            return (
                f"invalid token {t!r}: escape at index {i} is not '%' followed by two "
                f"uppercase hex digits (got '%{digits}')"
            )
        i += 3
    return f"invalid token {t!r}"  # pragma: no cover - unreachable when the grammar fails
