"""The HTTP side of the server: ``GET /_chatops`` and ``POST /_chatops/<method>`` (aiohttp).

Every reply is JSON: the listing, or JSON-RPC 2.0 (``{"jsonrpc": "2.0", "id": null,
"result": ...}`` or ``"error": {"code", "message"}``) with the HTTP status of PROTOCOL.md:
403 for a refused signature, 400 (-32602) for bad params, 404 (-32601) for an unknown method,
413 for a body over ``max_body``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from structlog.typing import FilteringBoundLogger

from eeveepy.errors import CallError, EeveeError

from .auth import Verifier
from .bridge import Bridge
from .translate import (
    INVALID_REQUEST,
    MAX_NAME,
    METHOD_NOT_FOUND,
    SERVER_ERROR,
    command_line,
    listing,
    outcome,
    parse_call,
)

__all__ = ["PATH", "make_app"]

PATH = "/_chatops"


def _rpc(status: int = 200, **fields: Any) -> web.Response:
    return web.json_response({"jsonrpc": "2.0", "id": None, **fields}, status=status)


def _error(exc: CallError) -> web.Response:
    return _rpc(exc.status, error={"code": exc.code, "message": str(exc)})


class _Handlers:
    def __init__(self, verifier: Verifier, bridge: Bridge, log: FilteringBoundLogger) -> None:
        self.verifier = verifier
        self.bridge = bridge
        self.log = log

    async def _verified(self, request: web.Request) -> bytes:
        """The body of ``request`` once its signature is checked (raises CallError)."""
        s = self.bridge.settings
        if request.content_length is not None and request.content_length > s.max_body:
            raise CallError(f"the body is over {s.max_body} bytes", INVALID_REQUEST, 413)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise CallError(f"the body is over {s.max_body} bytes", INVALID_REQUEST, 413) from None
        self.verifier.check(request.rel_url.raw_path, request.headers, body)
        return body

    async def list(self, request: web.Request) -> web.Response:
        try:
            await self._verified(request)
        except CallError as exc:
            self.log.info("chatops listing refused", error=str(exc), peer=request.remote)
            return _error(exc)
        s = self.bridge.settings
        body = listing(
            self.bridge.commands(),
            namespace=s.namespace,
            help_text=s.help,
            error_response=s.error_response,
        )
        return web.json_response(body)

    async def call(self, request: web.Request) -> web.Response:
        name = request.match_info["method"]
        try:
            body = await self._verified(request)
            if self.bridge.lookup(name) is None:
                raise CallError("Method not found", METHOD_NOT_FOUND, 404)
            call = parse_call(body)
            line = command_line(name, call.params)
            self.log.info("chatops call", method=name, user=call.user, room=call.room)
            answer = await self.bridge.call(name, line, call)
            return _rpc(result=outcome(name, answer))
        except CallError as exc:
            self.log.info("chatops call refused", method=name[:MAX_NAME], error=str(exc))
            return _error(exc)
        except EeveeError as exc:  # the bus is away, a payload too large...
            self.log.warning("chatops call failed", method=name[:MAX_NAME], error=str(exc))
            return _error(CallError(f"eevee could not run it: {exc}", SERVER_ERROR, 503))


def make_app(verifier: Verifier, bridge: Bridge, log: FilteringBoundLogger) -> web.Application:
    """The aiohttp application (the body limit is enforced by aiohttp too)."""
    handlers = _Handlers(verifier, bridge, log)
    app = web.Application(client_max_size=bridge.settings.max_body)
    app.router.add_get(PATH, handlers.list)
    app.router.add_post(PATH + "/{method}", handlers.call)
    return app
