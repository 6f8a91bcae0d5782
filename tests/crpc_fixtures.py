"""ChatOps RPC test parts: a CRPC server written for the tests (aiohttp.web on loopback, a
free port) that checks every request's signature, and a chat system with the console
connector, the router, the crpc operator and a console user."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from eeveepy.console import ChatSession
from eeveepy.errors import SignatureError
from eeveepy.protocol.models import ChatUser, Envelope, OutgoingMessage
from operators.crpc.signing import (
    check_window,
    load_public_key,
    parse_signature_header,
    signing_string,
    verify,
)
from tests.chat_system import ChatSystem
from tests.operator_procs import OperatorProc

DATA = Path(__file__).parent / "data" / "crpc"
WCID = r"^(?:where can i deploy|wcid)(?: (?<app>\S+))?$"


@dataclass
class Seen:
    """One request the test server received (its signature checked)."""

    method: str
    path: str
    body: dict[str, Any] | None
    keyid: str


@dataclass
class CrpcTestServer:
    """A ChatOps RPC server with a mutable listing, verifying signatures like a real one
    (the key of tests/data/crpc, the URL rebuilt from its own base URL, the ±5 min window)."""

    slow: float = 5.0
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    def __post_init__(self) -> None:
        self.key = load_public_key((DATA / "sample_client_public.pem").read_text())
        self.methods = {
            "wcid": {"regex": WCID, "params": ["app"], "path": "wcid", "help": "wcid [APP]"},
            "slow": {"regex": "slow", "params": [], "path": "slow", "help": "slow"},
        }

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/_chatops"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/_chatops", self.listing)
        app.router.add_post("/_chatops/{method}", self.call)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        if not self.port:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _check(self, request: web.Request, body: bytes) -> str | None:
        """The keyid when the request is signed right; None (and noted) otherwise."""
        url = f"http://127.0.0.1:{self.port}{request.path}"
        try:
            header = parse_signature_header(request.headers.get("Chatops-Signature", ""))
            stamp = request.headers.get("Chatops-Timestamp", "")
            check_window(stamp)
            nonce = request.headers.get("Chatops-Nonce", "")
            if not nonce or not verify(
                [self.key], signing_string(url, nonce, stamp, body), header.signature
            ):
                raise SignatureError("bad signature")
        except SignatureError as exc:
            self.refused.append(f"{request.method} {request.path}: {exc}")
            return None
        return header.keyid

    async def listing(self, request: web.Request) -> web.Response:
        keyid = await self._check(request, b"")
        if keyid is None:
            return web.json_response({"error": "unsigned"}, status=403)
        self.seen.append(Seen("GET", request.path, None, keyid))
        return web.json_response(
            {
                "namespace": "deploy",
                "help": "Deploy things.",
                "error_response": "the deploy server is unhappy",
                "methods": self.methods,
                "version": "3",
            }
        )

    async def call(self, request: web.Request) -> web.Response:
        raw = await request.read()
        keyid = await self._check(request, raw)
        if keyid is None:
            return web.json_response({"error": {"code": -32800, "message": "no"}}, status=403)
        body = json.loads(raw)
        self.seen.append(Seen("POST", request.path, body, keyid))
        method = request.match_info["method"]
        if method == "slow":
            await asyncio.sleep(self.slow)
        params = body.get("params", {})
        result = f"{body['user']} may deploy {params.get('app', 'anything')} in {body['room_id']}"
        if "fruit" in params:
            result += f" with {params['fruit']} and {params.get('vegetable', 'nothing')}"
        if method == "quiet":
            return web.json_response({"jsonrpc": "2.0", "id": None, "result": None})
        return web.json_response({"jsonrpc": "2.0", "id": None, "result": result})

    def gets(self) -> int:
        return sum(1 for s in self.seen if s.method == "GET")


@dataclass
class CrpcChat:
    """The console chat with router, console connector and crpc operator, and one user."""

    system: ChatSystem
    session: ChatSession
    crpc_id: str = field(default_factory=lambda: "crpc" + uuid.uuid4().hex[:6])
    crpc: OperatorProc | None = None

    @staticmethod
    def settings(**client: Any) -> dict[str, Any]:
        return {
            "client": {
                "private_key_file": str(DATA / "sample_client_private.pem"),
                "key_id": "eeveetest",
                "poll_interval": 0.3,
                "max_poll_interval": 1.0,
                "timeout": 1.0,
                **client,
            }
        }

    async def start_crpc(self, **client: Any) -> OperatorProc:
        self.crpc = await self.system.spawn(self.crpc_id, "operators.crpc", self.settings(**client))
        return self.crpc

    async def ask(self, text: str, *, timeout: float = 10.0, quiet: float = 0.3) -> str:
        """Say ``text`` as the user; the replies, joined by newlines ("" when none came)."""
        trace = await self.session.say(text)
        got: list[Envelope[OutgoingMessage]] = []
        await self.session.wait_replies(trace, timeout=timeout, quiet=quiet, emit=got.append)
        return "\n".join(env.body.text for env in got)

    async def until(self, text: str, expect: str, *, within: float = 10.0) -> str:
        """Ask ``text`` until the answer contains ``expect``; the last answer."""
        deadline = asyncio.get_running_loop().time() + within
        answer = ""
        while asyncio.get_running_loop().time() < deadline:
            answer = await self.ask(text, timeout=2.0)
            if expect in answer:
                return answer
            await asyncio.sleep(0.2)
        logs = "\n".join(p.log() for p in self.system.procs)
        raise AssertionError(f"{text!r}: never {expect!r}; last: {answer!r}\n{logs}")


def console_user(name: str = "alice") -> ChatUser:
    return ChatUser(id=name, name=name)


@contextlib.asynccontextmanager
async def crpc_chat(url: str, tmp: Path, *, echo: bool = False) -> AsyncIterator[CrpcChat]:
    """A console chat (network ``kit``, room ``#ops``, user alice, a router admin) with the
    router, the console connector and, with ``echo``, echo; the crpc operator is started by
    the test (:meth:`CrpcChat.start_crpc`). Everything is stopped at exit."""
    system = ChatSystem(url, tmp, platform="console")
    await system.start()
    session = ChatSession(system.io, user=console_user(), network="kit", room="#ops")
    try:
        router = {"admins": ["console:kit:alice"], "timeout": 5.0}
        await asyncio.gather(
            system.spawn("router." + uuid.uuid4().hex[:8], "operators.router", router),
            system.connector("kit", {"network": "kit"}),
            *([system.spawn("echo", "operators.echo", {})] if echo else []),
        )
        await session.start()
        yield CrpcChat(system, session)
    finally:
        await session.close()
        await system.close()
