"""eevee's commands served over ChatOps RPC (operators/crpc/server): real HTTP on loopback.

One system for the module: the test's bus, a real router and echo (processes), and the server
started in this process on its own bus connection. Requests are signed here with the sample
keys of tests/data/crpc and sent with aiohttp. The conformance cases of PROTOCOL.md: base URLs
``http://old.host`` and ``http://test.host/``; the Host header always says 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import structlog
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import settings as settings_
from hypothesis import strategies as st

pytest.register_assert_rewrite("tests.irc_servers")  # before the import below

from eeveepy.bus.client import BusConfig, barrier, connect  # noqa: E402
from eeveepy.bus.ipc import Ipc  # noqa: E402
from eeveepy.errors import CallError, CrpcConfigError, SignatureError  # noqa: E402
from eeveepy.protocol.models import (  # noqa: E402
    ChatMessage,
    CommandInvocation,
    CommandRegistration,
    CommandResult,
    CommandScope,
    Envelope,
    OutgoingMessage,
)
from operators.crpc import signing  # noqa: E402
from operators.crpc.nonces import NonceCache  # noqa: E402
from operators.crpc.server import RunningServer, ServerSettings, start_server  # noqa: E402
from operators.crpc.server.run import public_keys  # noqa: E402
from operators.crpc.server.translate import Answer, command_line, outcome, parse_call  # noqa: E402
from tests.chat_system import ChatSystem  # noqa: E402
from tests.irc_servers import make_cert  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "crpc"
BASES = ["http://old.host", "http://test.host/"]
WAIT = 10.0


def _key(name: str) -> rsa.RSAPrivateKey:
    return signing.load_private_key(signing.read_pem(file=DATA / f"{name}_private.pem"))


def settings(**overrides: Any) -> ServerSettings:
    values: dict[str, Any] = {
        "port": 0,
        "base_urls": BASES,
        "public_key_file": DATA / "sample_client_public.pem",
        "alt_public_key_file": DATA / "alternate_public.pem",
        "timeout": 2.0,
        **overrides,
    }
    return ServerSettings.model_validate(values)


@dataclass
class Rpc:
    """The running server and a signing HTTP client."""

    system: ChatSystem
    server: RunningServer
    http: aiohttp.ClientSession
    key: rsa.RSAPrivateKey
    server_timeout: float = 2.0

    async def send(
        self,
        path: str = "",
        body: dict[str, Any] | bytes | None = None,
        *,
        key: rsa.RSAPrivateKey | None = None,
        base: str = "http://test.host",
        timestamp: str | None = None,
        headers: dict[str, str] | None = None,
        signed: bool = True,
        server: RunningServer | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """GET the listing (``body`` None) or POST ``body`` to ``/_chatops`` + ``path``."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        url = "/_chatops" + path
        sent = dict(headers or {})
        if signed and not headers:
            sent = signing.sign_headers(
                key or self.key, "rsakey1", base + url, data or b"", timestamp=timestamp
            )
        where = (server or self.server).url + url
        if data is None:
            request = self.http.get(where, headers=sent)
        else:
            sent["Content-Type"] = "application/json"
            request = self.http.post(where, data=data, headers=sent)
        async with request as response:
            return response.status, json.loads(await response.read())

    async def call(self, method: str, **body: Any) -> tuple[int, dict[str, Any]]:
        return await self.send(f"/{method}", {"method": method, **body})


async def _start_rpc(system: ChatSystem, s: ServerSettings) -> tuple[Ipc, RunningServer]:
    ipc = Ipc(system.subjects, "crpc")
    await ipc.attach(await connect(BusConfig(url=system.url), name="crpc"))
    return ipc, await start_server(ipc, s, system_log())


def system_log() -> Any:
    return structlog.get_logger("test.crpc")


async def _close(ipc: Ipc) -> None:
    nc = ipc.nc
    await ipc.detach()
    await nc.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def rpc(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rpc]:
    system = ChatSystem(nats_url, tmp_path_factory.mktemp("crpc"), platform="crpc")
    await system.start()
    ipc: Ipc | None = None
    try:
        router = {"rules": {"echo": {"deny": ["crpc:*:mallory"]}}, "retry_for": 1.0}
        await asyncio.gather(
            system.spawn("router." + uuid.uuid4().hex[:8], "operators.router", router),
            system.spawn("echo", "operators.echo", {}),
        )
        await system.wait_echo_registered()
        ipc, server = await _start_rpc(system, settings())
        async with aiohttp.ClientSession() as http:
            yield Rpc(system, server, http, _key("sample_client"))
            await server.stop()
    finally:
        if ipc is not None:
            await _close(ipc)
        await system.close()


async def _methods(
    rpc: Rpc, listed: str, present: bool = True, server: RunningServer | None = None
) -> dict[str, Any]:
    """The listing's methods once ``listed`` is in them (or, ``present=False``, gone)."""
    deadline = time.monotonic() + WAIT
    while True:
        status, body = await rpc.send(server=server)
        assert status == 200, body
        if (listed in body["methods"]) == present:
            return dict(body["methods"])
        assert time.monotonic() < deadline, f"{listed}: never {'listed' if present else 'gone'}"
        await asyncio.sleep(0.1)


async def _listing(rpc: Rpc) -> dict[str, Any]:
    """The listing, once it names echo (the server asked for registrations at start)."""
    await _methods(rpc, "echo")
    return (await rpc.send())[1]


async def test_signed_get_lists_the_routers_commands(rpc: Rpc) -> None:
    body = await _listing(rpc)
    assert body["namespace"] == "eevee"
    assert body["version"] == "3"
    assert body["methods"]["echo"] == {
        "regex": "(?:echo)(?: (?<args>.*))?",
        "params": ["args", "text"],
        "path": "echo",
        "help": "!echo TEXT - Repeat TEXT.",
    }
    status, body = await rpc.send(base="http://old.host")  # either base URL
    assert status == 200


async def test_unsigned_or_badly_signed_requests_are_refused(rpc: Rpc) -> None:
    status, body = await rpc.send(signed=False)
    assert (status, body["error"]["code"]) == (403, signing.NONCE_MISSING)
    assert "Chatops-Nonce" in body["error"]["message"]
    bad = signing.sign_headers(rpc.key, "k", "http://test.host/_chatops")
    bad["Chatops-Signature"] = "Bearer nothing"
    status, body = await rpc.send(headers=bad)
    assert (status, body["error"]["code"]) == (403, signing.BAD_SIGNATURE_HEADER)


async def test_signed_post_runs_the_command_through_the_router(rpc: Rpc) -> None:
    await _listing(rpc)
    status, body = await rpc.call("echo", user="alice", room_id="#ops", params={"args": "hi"})
    assert (status, body) == (200, {"jsonrpc": "2.0", "id": None, "result": "hi"})
    # known extra fields are taken, unknown ones dropped
    extra = {"mention_slug": "Alice", "message_id": "m1", "raw_command": "echo hi", "x": 1}
    status, body = await rpc.call("echo", user="alice", params={"args": "hi"}, **extra)
    assert (status, body["result"]) == (200, "hi")
    # --long-args go to the router as flags; echo's pattern takes the text alone
    params = {"args": "two words", "force": "true", "reason": "just because"}
    status, body = await rpc.call("echo", user="alice", room_id="#ops", params=params)
    assert (status, body["result"]) == (200, "two words")
    # users and rooms are anything: they are encoded in subjects, never parsed
    params = {"args": "odd"}
    status, body = await rpc.call("echo", user="ev.il*> x", room_id="#a.b >", params=params)
    assert (status, body["result"]) == (200, "odd")


async def test_the_alternate_key_is_accepted_and_a_wrong_key_refused(rpc: Rpc) -> None:
    await _listing(rpc)
    params = {"user": "alice", "room_id": "#ops", "params": {"args": "rolled"}}
    status, body = await rpc.send("/echo", params, key=_key("alternate"))
    assert (status, body.get("result")) == (200, "rolled")
    wrong = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    status, body = await rpc.send("/echo", params, key=wrong)
    assert (status, body["error"]["code"]) == (403, signing.NOT_AUTHORIZED)


async def test_a_replayed_nonce_is_refused(rpc: Rpc) -> None:
    headers = signing.sign_headers(rpc.key, "rsakey1", "http://test.host/_chatops")
    assert (await rpc.send(headers=headers))[0] == 200
    status, body = await rpc.send(headers=headers)
    assert (status, body["error"]["code"]) == (403, signing.NOT_AUTHORIZED)
    assert "already used" in body["error"]["message"]


@pytest.mark.parametrize("minutes", [-6, 6])
async def test_a_timestamp_six_minutes_off_is_refused(rpc: Rpc, minutes: int) -> None:
    stamp = signing.format_timestamp(datetime.now(UTC) + timedelta(minutes=minutes))
    status, body = await rpc.send(timestamp=stamp)
    assert (status, body["error"]["code"]) == (403, signing.OUT_OF_WINDOW)
    assert "within 5 minutes" in body["error"]["message"]
    status, body = await rpc.send(timestamp="last tuesday")
    assert (status, body["error"]["code"]) == (403, signing.BAD_TIMESTAMP)


async def test_the_host_header_never_names_the_signed_url(rpc: Rpc) -> None:
    # Signed for the URL the request really went to (what Host says): not a configured base.
    status, body = await rpc.send(base=rpc.server.url)
    assert (status, body["error"]["code"]) == (403, signing.NOT_AUTHORIZED)
    assert "http://test.host/_chatops" in body["error"]["message"]
    headers = {"Host": "test.host"}
    signed = signing.sign_headers(rpc.key, "k", rpc.server.url + "/_chatops")
    status, body = await rpc.send(headers={**headers, **signed})
    assert status == 403


async def test_bad_params_unknown_methods_and_usage(rpc: Rpc) -> None:
    await _listing(rpc)
    status, body = await rpc.call("echo", room_id="#ops", params={"args": "x"})
    assert (status, body["error"]) == (
        400,
        {"code": -32602, "message": "A username must be supplied as 'user'"},
    )
    status, body = await rpc.call("nope", user="alice")
    assert (status, body["error"]) == (404, {"code": -32601, "message": "Method not found"})
    status, body = await rpc.call("echo", user="alice", params={"a b": "x"})
    assert (status, body["error"]["code"]) == (400, -32602)
    status, body = await rpc.call("echo", user="alice", room_id="#ops")  # echo needs TEXT
    assert (status, body["error"]) == (400, {"code": -32602, "message": "usage: !echo TEXT"})
    status, body = await rpc.send("/echo", b"{not json")
    assert (status, body["error"]["code"]) == (400, -32700)


async def test_a_command_the_user_may_not_run_is_refused_by_the_router(rpc: Rpc) -> None:
    await _listing(rpc)
    status, body = await rpc.call("echo", user="mallory", room_id="#ops", params={"args": "x"})
    assert (status, body["error"]) == (
        403,
        {"code": -32800, "message": "you are not allowed to run `echo`"},
    )


async def test_giant_bodies_are_refused(rpc: Rpc) -> None:
    body = {"user": "alice", "params": {"args": "x" * 100_000}}
    status, answer = await rpc.send("/echo", body)
    assert (status, answer["error"]["code"]) == (413, -32600)
    assert "over 65536 bytes" in answer["error"]["message"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(100):
            yield b"x" * 1000

    headers = signing.sign_headers(rpc.key, "k", "http://test.host/_chatops/echo")
    async with rpc.http.post(
        rpc.server.url + "/_chatops/echo", data=chunks(), headers=headers
    ) as r:
        assert r.status == 413
        assert "over 65536 bytes" in (await r.json())["error"]["message"]


async def test_commands_scoped_to_other_platforms_are_not_listed(rpc: Rpc) -> None:
    await _listing(rpc)
    for name, scope in [("irconly", ["irc"]), ("anywhere", ["irc", "crpc"])]:
        reg = CommandRegistration(operator="scoped", name=name, scope=CommandScope(platforms=scope))
        await rpc.system.io.publish(rpc.system.subjects.command_register(), reg)
    await barrier(rpc.system.io.nc)
    assert "irconly" not in await _methods(rpc, "anywhere")
    status, body = await rpc.call("irconly", user="alice")
    assert (status, body["error"]["code"]) == (404, -32601)


async def test_the_serving_operators_own_commands_are_not_served(rpc: Rpc) -> None:
    await _listing(rpc)
    mine = CommandRegistration(operator="crpc", name="mine", usage="!mine")  # the server's id
    other = CommandRegistration(operator="otherop", name="theirs", usage="!theirs")
    for reg in (mine, other):
        await rpc.system.io.publish(rpc.system.subjects.command_register(), reg)
    await barrier(rpc.system.io.nc)
    assert "mine" not in await _methods(rpc, "theirs")
    status, body = await rpc.call("mine", user="alice")
    assert (status, body["error"]["code"]) == (404, -32601)


Serve = Callable[[Envelope[CommandInvocation]], Awaitable[CommandResult | None]]


async def _register(
    rpc: Rpc, name: str, answer: CommandResult | None = None, serve: Serve | None = None
) -> None:
    """Register ``name``, served here by ``serve`` (as this test's bus source), else by a
    handler of the operator ``<name>op`` answering ``answer`` (None: never answering);
    ``ghost`` is served by nobody."""
    system = rpc.system

    async def run(env: Envelope[CommandInvocation]) -> CommandResult | None:
        return answer

    if name != "ghost":
        handler = serve or run
        await system.io.subscribe(system.subjects.command_run(name), handler, queue=f"cmd.{name}")
    operator = system.SOURCE if serve else f"{name}op"
    reg = CommandRegistration(operator=operator, name=name, usage=f"!{name}")
    await system.io.publish(system.subjects.command_register(), reg)
    await barrier(system.io.nc)
    await _methods(rpc, name)


async def test_a_command_that_keeps_talking_is_cut_at_the_timeout(rpc: Rpc) -> None:
    system = rpc.system
    talking: list[asyncio.Task[None]] = []

    async def talk(msg: ChatMessage) -> None:
        for n in range(100):
            out = OutgoingMessage(
                platform="crpc",
                network="rpc",
                target=msg.user.id,
                text=f"line {n}",
                private=True,
                reply_to=msg.message_id,
            )
            await system.io.publish(system.subjects.chat_out("crpc", "rpc"), out)
            await asyncio.sleep(0.1)

    async def chatty(env: Envelope[CommandInvocation]) -> CommandResult:
        talking.append(asyncio.create_task(talk(env.body.message)))
        return CommandResult(ok=True)

    await _register(rpc, "chatty", serve=chatty)
    started = time.monotonic()
    try:
        status, body = await rpc.call("chatty", user="alice")
    finally:
        for task in talking:
            task.cancel()
    took = time.monotonic() - started
    assert status == 200
    lines = body["result"].split("\n")
    assert lines[:3] == ["line 0", "line 1", "line 2"]
    assert rpc.server_timeout <= took < rpc.server_timeout + 1.5
    assert 5 < len(lines) < 40


async def test_unavailable_commands_and_commands_that_answer_nothing(rpc: Rpc) -> None:
    await _register(rpc, "ghost")
    status, body = await rpc.call("ghost", user="alice")
    assert (status, body["error"]["code"]) == (503, -32000)
    assert body["error"]["message"].startswith("`ghost` is unavailable right now")
    # An operator withdrawing a command (command.unregister): it leaves the listing.
    gone = {"v": 1, "kind": "command.unregister", "id": uuid.uuid4().hex, "source": "ghostop"}
    gone |= {"timestamp": datetime.now(UTC).isoformat(), "headers": {}}
    gone["body"] = {"operator": "ghostop", "name": "ghost"}
    subject = rpc.system.subjects.command_register()
    await rpc.system.io.publish_raw(subject, json.dumps(gone).encode())
    await _methods(rpc, "ghost", present=False)
    await _register(rpc, "quiet", CommandResult(ok=True))
    started = time.monotonic()
    status, body = await rpc.call("quiet", user="alice")
    assert (status, body) == (200, {"jsonrpc": "2.0", "id": None, "result": None})
    assert time.monotonic() - started >= rpc.server_timeout


async def test_stop_is_bounded_while_a_call_waits(rpc: Rpc) -> None:
    ipc, other = await _start_rpc(rpc.system, settings(timeout=60.0))
    try:
        await _register(rpc, "slow")  # its operator never answers: the router waits 2 x 10 s
        await _methods(rpc, "slow", server=other)
        data = json.dumps({"user": "alice"})
        headers = signing.sign_headers(rpc.key, "k", "http://test.host/_chatops/slow", data)
        waiting = asyncio.create_task(
            rpc.http.post(other.listing_url + "/slow", data=data.encode(), headers=headers)
        )
        await asyncio.sleep(0.5)
        assert not waiting.done()
        started = time.monotonic()
        await other.stop()
        assert time.monotonic() - started < 3.0
        await other.stop()  # again: nothing to do
        with contextlib.suppress(aiohttp.ClientError):
            (await waiting).release()
    finally:
        await _close(ipc)


async def test_tls_and_configuration_errors(rpc: Rpc, tmp_path: Path) -> None:
    cert, key = await asyncio.to_thread(make_cert, tmp_path, "IP:127.0.0.1")
    ipc, tls = await _start_rpc(rpc.system, settings(tls_cert=cert, tls_key=key))
    try:
        assert tls.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(cert))
        headers = signing.sign_headers(rpc.key, "k", "http://test.host/_chatops")
        async with rpc.http.get(tls.listing_url, headers=headers, ssl=ctx) as response:
            assert response.status == 200
    finally:
        await tls.stop()
        await _close(ipc)
    with pytest.raises(CrpcConfigError, match="cannot listen on"):
        await start_server(rpc.system.io, settings(port=rpc.server.port), system_log())
    bad = settings(public_key_file=DATA / "vectors.json")
    with pytest.raises(CrpcConfigError, match="not a PEM public key"):
        await start_server(rpc.system.io, bad, system_log())
    with pytest.raises(ValueError, match="default port :443"):
        settings(base_urls=["https://example.com:443"])


def test_calls_and_answers_translate_both_ways() -> None:
    assert command_line("echo", {"args": " hi there ", "dry-run": True, "n": 3}) == (
        "echo hi there --dry-run --n 3"
    )
    assert command_line("echo", {"reason": "a\nb  c", "x": None, "f": False}) == (
        "echo --reason a b c"
    )
    with pytest.raises(CallError, match="must be a string"):
        command_line("echo", {"args": ["x"]})
    assert outcome("echo", None) is None
    assert outcome("echo", Answer(("one", "two"), from_router=False)) == "one\ntwo"
    for text, status in [
        ("unknown command `x`; try `help`", 404),
        ("you are not allowed to run `echo`", 403),
        ("`echo` timed out", 503),
        ("`echo` failed: boom", 400),
        ("usage: !echo TEXT", 400),
    ]:
        with pytest.raises(CallError) as caught:
            outcome("echo", Answer((text,), from_router=True))
        assert caught.value.status == status


def test_the_replay_cache_keeps_nonces_twice_the_window_within_a_bound() -> None:
    now = [1000.0]
    cache = NonceCache(keep=600.0, limit=3, clock=lambda: now[0])
    cache.use("a")
    with pytest.raises(SignatureError, match="already used"):
        cache.use("a")
    now[0] += 599.0
    assert "a" in cache
    cache.use("b")
    cache.use("c")
    with pytest.raises(SignatureError, match="too many calls"):
        cache.use("d")
    now[0] += 2.0  # a expires; b and c are kept
    assert "a" not in cache
    assert len(cache) == 2
    cache.use("d")
    with pytest.raises(ValueError, match="twice the timestamp window"):
        NonceCache(keep=60.0)


def test_used_nonces_survive_a_restart_in_the_journal(tmp_path: Path) -> None:
    now = [1000.0]
    journal = tmp_path / "data" / "crpc-nonces"
    first = NonceCache(keep=600.0, clock=lambda: now[0], journal=journal)
    first.use("captured")
    first.use("older")
    now[0] += 300.0
    second = NonceCache(keep=600.0, clock=lambda: now[0], journal=journal)  # a new process
    with pytest.raises(SignatureError, match="already used"):
        second.use("captured")
    journal.write_text(journal.read_text() + "garbage\n\x00 nan\n", encoding="utf-8")
    now[0] += 301.0  # both expired; the damaged lines are skipped
    third = NonceCache(keep=600.0, clock=lambda: now[0], journal=journal)
    assert len(third) == 0
    third.use("captured")
    assert len(journal.read_text().splitlines()) == 1  # rewritten with the live ones only
    journal.unlink()
    journal.mkdir()  # cannot be appended to: refused rather than run unrecorded
    with pytest.raises(SignatureError, match="cannot record nonces"):
        third.use("fresh")
    with pytest.raises(CrpcConfigError, match="cannot read the journal"):
        NonceCache(keep=600.0, journal=journal)


def test_public_keys_from_the_environment() -> None:
    pem = (DATA / "alternate_public.pem").read_text()
    s = settings(public_key_file=None, public_key_env="CHATOPS_KEY", alt_public_key_file=None)
    (key,) = public_keys(s, {"CHATOPS_KEY": pem})
    assert key.public_numbers() == _key("alternate").public_key().public_numbers()
    with pytest.raises(CrpcConfigError, match="CHATOPS_KEY"):
        public_keys(s, {})
    with pytest.raises(ValueError, match="public_key_file or public_key_env"):
        settings(public_key_file=None)


json_leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = (
    json_leaves
    | st.lists(json_leaves, max_size=3)
    | st.dictionaries(st.text(max_size=8), json_leaves | st.lists(json_leaves, max_size=2))
)


@settings_(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"user": json_values, "room_id": json_values, "params": json_values}
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_fuzzed_call_bodies_raise_only_call_error(body: bytes) -> None:
    line, status = "", 0
    try:
        line = command_line("echo", parse_call(body).params)
    except CallError as exc:
        status = exc.status
    assert status == 400 or line.startswith("echo")
