"""The homeserver through matrix-nio: a client per session, logging in, checked requests.

matrix-nio retries a failed request forever by default (connection errors and 429s alike);
here it retries nothing (:func:`make_client`), so that a homeserver that is down ends the
session and the kit's backoff decides when to try again, and so that a 429 is waited out
here, as its ``retry_after_ms`` says (bounded by ``max_retry_after``), and logged
(:func:`call`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import aiohttp
from nio import AsyncClient, AsyncClientConfig, ErrorResponse, LoginResponse
from nio.crypto import ENCRYPTION_ENABLED

from eeveepy.errors import MatrixLoginError, MatrixSessionError, RateLimitedError
from operators.matrix.settings import MatrixSettings
from operators.matrix.store import Credentials, StateStore

__all__ = ["call", "login", "make_client", "retry_after"]

R = TypeVar("R")

REFUSED_TOKEN: Final = frozenset({"M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"})
REFUSED_LOGIN: Final = frozenset({"M_FORBIDDEN", "M_USER_DEACTIVATED", "M_INVALID_USERNAME"})
RATE_LIMITED: Final = frozenset({"M_LIMIT_EXCEEDED", "429"})
DEFAULT_RETRY_AFTER: Final = 5.0
"""Seconds to wait after a 429 that does not say how long."""
MAX_RATE_LIMITED: Final = 10
"""429s in a row after which a request fails (the session is retried by the kit)."""


def make_client(settings: MatrixSettings, store: StateStore) -> AsyncClient:
    """A logged-out client for one session, keys in the store's crypto directory."""
    config = AsyncClientConfig(
        max_limit_exceeded=0,
        max_timeouts=0,
        request_timeout=settings.request_timeout,
        store_sync_tokens=False,
        encryption_enabled=settings.encryption and ENCRYPTION_ENABLED,
    )
    return AsyncClient(
        settings.homeserver,
        settings.user_id,
        store_path=str(store.crypto_dir),
        config=config,
    )


def retry_after(resp: ErrorResponse) -> float | None:
    """Seconds a 429 asks to wait; None when ``resp`` is not a 429."""
    if str(resp.status_code) not in RATE_LIMITED:
        return None
    return (resp.retry_after_ms or DEFAULT_RETRY_AFTER * 1000) / 1000


async def call(
    request: Callable[[], Awaitable[R]],
    what: str,
    log: Any,
    *,
    max_wait: float = 60.0,
) -> R:
    """``await request()`` and its answer once it is not an error.

    A 429 is waited out (``retry_after_ms``, at most ``max_wait`` seconds at once) and asked
    again, up to :data:`MAX_RATE_LIMITED` times (then
    :class:`~eeveepy.errors.RateLimitedError`); any other error answer raises
    :class:`~eeveepy.errors.MatrixSessionError` with its code, and a connection failure too.
    """
    wait = 0.0
    for _ in range(MAX_RATE_LIMITED):
        try:
            resp = await request()
        except aiohttp.ClientError as exc:  # not all of them are OSErrors
            raise MatrixSessionError(f"{what}: {exc or type(exc).__name__}") from exc
        if not isinstance(resp, ErrorResponse):
            return resp
        asked = retry_after(resp)
        if asked is None:
            http = getattr(getattr(resp, "transport_response", None), "status", None)
            raise MatrixSessionError(
                f"{what}: {resp.status_code} {resp.message}",
                resp.status_code,
                http if isinstance(http, int) else None,
            )
        wait = asked
        log.warning("rate limited by the homeserver: waiting", request=what, seconds=wait)
        await asyncio.sleep(min(wait, max_wait))
    raise RateLimitedError(f"{what}: still rate limited after {MAX_RATE_LIMITED} waits", wait)


async def _token_works(client: AsyncClient, log: Any) -> bool:
    """Whether the homeserver takes the client's access token (it may have been revoked)."""
    try:
        await call(client.whoami, "whoami", log)
    except MatrixSessionError as exc:
        if exc.status in REFUSED_TOKEN:
            return False
        raise
    return True


async def login(client: AsyncClient, s: MatrixSettings, store: StateStore, log: Any) -> None:
    """Log ``client`` in: with the token the settings give, else the one stored by the last
    login (the same device, so its encryption keys stay valid), else with the password.

    Raises :class:`~eeveepy.errors.MatrixLoginError` when the homeserver refuses them.
    """
    try:
        given = s.given_token()
        password = s.login_password()
    except ValueError as exc:  # the secret's file went away since the settings were read
        raise MatrixLoginError(str(exc)) from None
    if given is not None:
        assert s.device_id is not None  # the settings require it with a token
        client.restore_login(s.user_id, s.device_id, given)
        if not await _token_works(client, log):
            raise MatrixLoginError("the homeserver refused the access token")
        return
    stored = store.credentials()
    if stored is not None and s.device_id in (None, stored.device_id):
        client.restore_login(stored.user_id, stored.device_id, stored.access_token)
        if await _token_works(client, log):
            log.info("logged in with the stored token", device=stored.device_id)
            return
        log.warning("the stored access token was refused: logging in again")
        store.forget_credentials()
        client.access_token = ""
    if password is None:
        raise MatrixLoginError("no password to log in with (the stored token was refused)")
    client.device_id = s.device_id or (stored.device_id if stored else "")
    try:
        resp = await call(lambda: client.login(password, device_name=s.device_name), "login", log)
    except MatrixSessionError as exc:
        if exc.status in REFUSED_LOGIN:
            raise MatrixLoginError(f"the homeserver refused the login: {exc}") from None
        raise
    assert isinstance(resp, LoginResponse)
    store.save_credentials(
        Credentials(s.homeserver, resp.user_id, resp.device_id, resp.access_token)
    )
    log.info("logged in with the password", device=resp.device_id)
