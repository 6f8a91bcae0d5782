"""The replay cache of a ChatOps RPC server: a nonce is accepted once, across restarts too.

Only nonces whose signature verified are remembered (nobody without the client's key can
fill the cache), each for ``keep`` seconds, at least twice the timestamp window: a replayed
request is then refused either for its nonce or for its timestamp. Memory is bounded: at
``limit`` live nonces new requests are refused (a burst of more than ``limit`` calls in
``keep`` seconds) rather than forgetting a nonce early, which would let it be replayed.

With a ``journal`` (a file in the operator's data directory) each nonce is appended to it
before its request runs, and a new process reads back those still within ``keep``: a request
captured just before a restart cannot be replayed just after it. The journal keeps a digest
and the wall-clock expiry, one line each, and is compacted when mostly expired.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from eeveepy.errors import CrpcConfigError, SignatureError

from .signing import NOT_AUTHORIZED, WINDOW

__all__ = ["NonceCache"]

KEEP = 2 * WINDOW.total_seconds() + 60
"""Seconds a nonce is remembered: twice the window, and a minute for clock steps."""

COMPACT_AFTER = 10_000
"""Journal lines appended before an expired majority is dropped from the file."""


def _digest(nonce: str) -> str:
    return hashlib.sha256(nonce.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class NonceCache:
    """Nonces seen in the last ``keep`` seconds, at most ``limit`` of them."""

    def __init__(
        self,
        keep: float = KEEP,
        limit: int = 100_000,
        clock: Callable[[], float] = time.time,
        journal: Path | None = None,
    ) -> None:
        if keep < 2 * WINDOW.total_seconds():
            raise ValueError("nonces must be kept at least twice the timestamp window")
        self._keep = keep
        self._limit = limit
        self._clock = clock
        self._expiry: OrderedDict[str, float] = OrderedDict()  # digests, in expiry order
        self._journal = journal
        self._appended = 0
        if journal is not None:
            self._load(journal)

    def __len__(self) -> int:
        self._purge()
        return len(self._expiry)

    def __contains__(self, nonce: object) -> bool:
        self._purge()
        return isinstance(nonce, str) and _digest(nonce) in self._expiry

    def use(self, nonce: str) -> None:
        """Remember ``nonce`` (its request's signature verified); refuse it if already used.

        Raises :class:`SignatureError` (code -32800) for a replay, or when the cache is full.
        """
        self._purge()
        key = _digest(nonce)
        if key in self._expiry:
            raise SignatureError(
                "this Chatops-Nonce was already used: sign every request with a new nonce",
                NOT_AUTHORIZED,
            )
        if len(self._expiry) >= self._limit:
            raise SignatureError(
                f"too many calls: more than {self._limit} in {self._keep:g} s; try again later",
                NOT_AUTHORIZED,
            )
        expiry = self._clock() + self._keep
        self._record(key, expiry)
        self._expiry[key] = expiry

    def _purge(self) -> None:
        now = self._clock()
        while self._expiry:
            key, expiry = next(iter(self._expiry.items()))
            if expiry > now:
                return
            del self._expiry[key]

    # -- the journal -------------------------------------------------------------------------

    def _load(self, path: Path) -> None:
        """Read back the nonces of an earlier process still within ``keep`` (a damaged line
        is skipped), and rewrite the file with them alone."""
        now = self._clock()
        live: list[tuple[float, str]] = []
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        except OSError as exc:  # unread, a request of the last minutes could be replayed
            raise CrpcConfigError(
                f"cannot read the journal of used nonces {path}: {exc.strerror or exc};"
                " fix its permissions, or remove it if no request can have been captured"
            ) from None
        for line in text.splitlines():
            key, _, when = line.partition(" ")
            try:
                expiry = float(when)
            except ValueError:
                continue
            if len(key) == 32 and now < expiry <= now + self._keep:
                live.append((expiry, key))
        for expiry, key in sorted(live):
            self._expiry[key] = expiry
        self._rewrite(path)

    def _record(self, key: str, expiry: float) -> None:
        """Append one nonce to the journal before its request runs. A journal that cannot be
        written refuses the request: running it unrecorded would let it be replayed."""
        if self._journal is None:
            return
        try:
            with self._journal.open("a", encoding="utf-8") as out:
                out.write(f"{key} {expiry:.3f}\n")
        except OSError as exc:
            raise SignatureError(
                f"the server cannot record nonces ({exc.strerror or exc}); try again later",
                NOT_AUTHORIZED,
            ) from None
        self._appended += 1
        if self._appended >= COMPACT_AFTER and self._appended > 2 * len(self._expiry):
            self._rewrite(self._journal)

    def _rewrite(self, path: Path) -> None:
        self._appended = 0
        tmp = path.with_name(path.name + ".tmp")
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(
                "".join(f"{k} {e:.3f}\n" for k, e in self._expiry.items()), encoding="utf-8"
            )
            os.replace(tmp, path)
