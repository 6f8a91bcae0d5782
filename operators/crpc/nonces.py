"""The replay cache of a ChatOps RPC server: a nonce is accepted once.

Only nonces whose signature verified are remembered (nobody without the client's key can
fill the cache), each for ``keep`` seconds, at least twice the timestamp window: a replayed
request is then refused either for its nonce or for its timestamp. Memory is bounded: at
``limit`` live nonces new requests are refused (a burst of more than ``limit`` calls in
``keep`` seconds) rather than forgetting a nonce early, which would let it be replayed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from eeveepy.errors import SignatureError

from .signing import NOT_AUTHORIZED, WINDOW

__all__ = ["NonceCache"]

KEEP = 2 * WINDOW.total_seconds() + 60
"""Seconds a nonce is remembered: twice the window, and a minute for clock steps."""


class NonceCache:
    """Nonces seen in the last ``keep`` seconds, at most ``limit`` of them."""

    def __init__(
        self,
        keep: float = KEEP,
        limit: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if keep < 2 * WINDOW.total_seconds():
            raise ValueError("nonces must be kept at least twice the timestamp window")
        self._keep = keep
        self._limit = limit
        self._clock = clock
        self._expiry: OrderedDict[str, float] = OrderedDict()  # in expiry order

    def __len__(self) -> int:
        self._purge()
        return len(self._expiry)

    def __contains__(self, nonce: object) -> bool:
        self._purge()
        return nonce in self._expiry

    def use(self, nonce: str) -> None:
        """Remember ``nonce`` (its request's signature verified); refuse it if already used.

        Raises :class:`SignatureError` (code -32800) for a replay, or when the cache is full.
        """
        self._purge()
        if nonce in self._expiry:
            raise SignatureError(
                "this Chatops-Nonce was already used: sign every request with a new nonce",
                NOT_AUTHORIZED,
            )
        if len(self._expiry) >= self._limit:
            raise SignatureError(
                f"too many calls: more than {self._limit} in {self._keep:g} s; try again later",
                NOT_AUTHORIZED,
            )
        self._expiry[nonce] = self._clock() + self._keep

    def _purge(self) -> None:
        now = self._clock()
        while self._expiry:
            nonce, expiry = next(iter(self._expiry.items()))
            if expiry > now:
                return
            del self._expiry[nonce]
