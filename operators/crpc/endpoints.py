"""The client's endpoints: kept in the operator's key-value store, each polled for its listing.

An endpoint is a listing URL and its prefix. The set is stored under :data:`KV_KEY` (with each
endpoint's last good listing), so it survives restarts, and the commands of a stored listing
are offered again at start before the server has been asked. Each endpoint is polled at once
when added (or loaded), then every ``poll_interval`` seconds while it answers; after a failure
the wait grows x1.5 (:class:`~eeveepy.aio.Backoff`) up to ``max_poll_interval``, and the last
good listing stays in use. :meth:`Endpoints.remove` cancels the endpoint's poller and waits
until it has really ended: nothing of a removed endpoint comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eeveepy.aio import Backoff, cancel_and_wait
from eeveepy.errors import EndpointError, ListingError, StoreError
from eeveepy.runtime.kvstore import KvStore

from .listing import Listing, Namespace, parse_listing
from .settings import ClientSettings
from .transport import Transport

__all__ = ["KV_KEY", "Endpoint", "Endpoints"]

KV_KEY: Final = "crpc.endpoints"
"""The store key of the endpoint set (JSON: :class:`Stored`)."""

Changed = Callable[["Endpoint"], Awaitable[None]]


class Endpoint(BaseModel):
    """One endpoint: URL, prefix, last good listing (stored) and the last poll (memory)."""

    model_config = ConfigDict(extra="forbid")

    url: str
    prefix: str
    listing: Listing | None = None
    listing_at: datetime | None = None
    """When the listing in use was fetched."""
    polled_at: datetime | None = Field(default=None, exclude=True)
    last_result: str = Field(default="not polled yet", exclude=True)
    last_error: str | None = Field(default=None, exclude=True)
    """The last failure (kept after a later success, with its time, until the next one)."""

    def namespace(self) -> Namespace | None:
        """The commands of the listing in use (None before a first good listing)."""
        if self.listing is None:
            return None
        return Namespace.build(self.url, self.prefix, self.listing)


class Stored(BaseModel):
    """What :data:`KV_KEY` holds."""

    model_config = ConfigDict(extra="ignore")

    endpoints: list[Endpoint] = Field(default_factory=list)


class Endpoints:
    """The endpoint set, its store and its pollers. ``changed`` is awaited whenever an
    endpoint's listing or prefix changes (to register its commands again)."""

    def __init__(
        self,
        store: KvStore,
        transport: Transport,
        settings: Callable[[], ClientSettings],
        changed: Changed,
        log: Callable[..., object],
    ) -> None:
        self._store = store
        self._transport = transport
        self._settings = settings
        self._changed = changed
        self._log = log
        self.by_url: dict[str, Endpoint] = {}
        self._pollers: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}

    # -- the set ---------------------------------------------------------------------------

    async def load(self) -> list[Endpoint]:
        """Read the stored set (an unreadable value is logged and treated as empty)."""
        raw = await self._store.get(KV_KEY)
        if raw is None:
            return []
        try:
            stored = Stored.model_validate_json(raw)
        except ValidationError as exc:
            self._log("stored endpoints unreadable; starting with none", error=str(exc))
            return []
        self.by_url = {e.url: e for e in stored.endpoints}
        return list(self.by_url.values())

    async def save(self) -> None:
        """Store the set (retried by the store until it is written)."""
        value = Stored(endpoints=list(self.by_url.values())).model_dump_json()
        await self._store.put(KV_KEY, value.encode())

    def owner_of(self, prefix: str) -> Endpoint | None:
        """The endpoint using ``prefix``, if any."""
        return next((e for e in self.by_url.values() if e.prefix == prefix), None)

    async def add(self, url: str, prefix: str) -> Endpoint:
        """Add an endpoint (checked by the caller) and store the set; :meth:`start` polls it."""
        if url in self.by_url:
            raise EndpointError(f"{url} is already added (prefix `{self.by_url[url].prefix}`)")
        other = self.owner_of(prefix)
        if other is not None:
            raise EndpointError(f"Sorry, {prefix} is already associated with {other.url}")
        endpoint = self.by_url[url] = Endpoint(url=url, prefix=prefix)
        await self.save()
        return endpoint

    async def remove(self, url: str) -> Endpoint:
        """Stop polling ``url`` (waiting until the poller has ended) and forget it."""
        endpoint = self.by_url.get(url)
        if endpoint is None:
            raise EndpointError(f"I'm not polling {url}")
        await self._stop_poller(url)
        del self.by_url[url]
        await self.save()
        return endpoint

    async def set_prefix(self, url: str, prefix: str) -> Endpoint:
        """Give ``url`` a new prefix (one prefix belongs to one URL)."""
        endpoint = self.by_url.get(url)
        if endpoint is None:
            raise EndpointError(f"I'm not polling {url}")
        other = self.owner_of(prefix)
        if other is not None and other is not endpoint:
            raise EndpointError(f"Sorry, {prefix} is already associated with {other.url}")
        endpoint.prefix = prefix
        await self.save()
        return endpoint

    # -- polling ---------------------------------------------------------------------------

    def start(self, endpoint: Endpoint, *, polled: bool | None = None) -> None:
        """Poll ``endpoint`` from now on (idempotent): at once, or, when it was just polled,
        after the wait that follows that poll's result ``polled``."""
        task = self._pollers.get(endpoint.url)
        if task is not None and not task.done():
            return
        self._wake[endpoint.url] = asyncio.Event()
        self._pollers[endpoint.url] = asyncio.get_running_loop().create_task(
            self._poll_loop(endpoint.url, polled), name=f"crpc-poll {endpoint.url}"
        )

    def wake(self, url: str | None = None) -> None:
        """Poll ``url`` (every endpoint when None) now instead of at its next turn."""
        for key, event in self._wake.items():
            if url is None or key == url:
                event.set()

    async def stop(self) -> None:
        """Stop every poller (bounded)."""
        await asyncio.gather(*(self._stop_poller(url) for url in list(self._pollers)))

    async def _stop_poller(self, url: str) -> None:
        task = self._pollers.pop(url, None)
        self._wake.pop(url, None)
        if task is not None:
            await cancel_and_wait(task)

    async def _poll_loop(self, url: str, polled: bool | None) -> None:
        s = self._settings()
        backoff = Backoff(s.poll_interval * 1.5, s.max_poll_interval, factor=1.5)
        while url in self.by_url:
            if polled is None:
                try:
                    ok = await self.poll(url)
                except Exception as exc:  # a bug must not end the polling for good
                    self._log("listing poll crashed", url=url, error=repr(exc))
                    ok = False
            else:
                ok, polled = polled, None
            s = self._settings()
            if ok:
                backoff.reset()
                delay = s.poll_interval
            else:
                delay = backoff.next()
            wake = self._wake.get(url)
            if wake is None:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)
            wake.clear()

    async def poll(self, url: str) -> bool:
        """Fetch ``url``'s listing once; True when it was good (and is now in use)."""
        endpoint = self.by_url.get(url)
        if endpoint is None:
            return False
        answer = await self._transport.get(url, self._settings().listing_timeout)
        endpoint.polled_at = datetime.now(UTC)
        try:
            if answer.error is not None or answer.status != 200:
                raise ListingError(answer.short())
            listing = parse_listing(answer.body)
        except ListingError as exc:
            endpoint.last_result = endpoint.last_error = str(exc)
            self._log("listing poll failed", url=url, error=str(exc))
            return False
        if self.by_url.get(url) is not endpoint:
            return False  # removed (or replaced) meanwhile
        namespace = Namespace.build(url, endpoint.prefix, listing)
        n = len(namespace.methods)
        endpoint.last_result = f"Found {n} method{'' if n == 1 else 's'}."
        if namespace.skipped:
            endpoint.last_result += " Skipped: " + "; ".join(namespace.skipped)
        if listing != endpoint.listing:
            endpoint.listing, endpoint.listing_at = listing, endpoint.polled_at
            with contextlib.suppress(StoreError):
                await self.save()
            await self._changed(endpoint)
        return True
