"""A real Matrix homeserver on loopback for the Matrix connector's tests, and a test client.

* ``synapse``: a session-scoped Synapse (PyPI, SQLite in a temporary directory, a free port,
  the generated config of PEERS.md section 3: no federation, rate limits opened wide), with an
  admin account to register users and tighten one user's rate limit. Ready in ~2 s.
* :class:`Synapse` itself, to start one of a test's own (a homeserver that is stopped and
  started again on the same port).
* :class:`MatrixUser`: a matrix-nio client that logs in, syncs in the background (a large
  timeline limit, so it never misses a reply), records every room event and waits for them
  with bounded waits; it speaks encrypted rooms too.

Users are registered over HTTP with the shared secret (``/_synapse/admin/v1/register``), with
no import of Synapse. Without Synapse installed the tests skip, saying how to install it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
SECRET = "test-shared-secret"
SERVER_NAME = "localhost"
WAIT = 10.0

_WIDE = "{per_second: 1000, burst_count: 1000}"


class SynapseUnavailable(Exception):
    """Synapse is not installed (tests skip, benchmarks say so)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def need_synapse() -> None:
    """Raise :class:`SynapseUnavailable` saying how to install it, when it is missing."""
    if importlib.util.find_spec("synapse") is None:
        raise SynapseUnavailable(
            "Synapse is not installed: pip install matrix-synapse (it is in the dev extra)"
        )


@dataclass
class Registered:
    user_id: str
    password: str
    access_token: str
    device_id: str


class Synapse:
    """One Synapse process serving the client API on ``port`` (a free one by default)."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        need_synapse()
        self.dir = directory
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin: Registered | None = None
        self.dir.mkdir(parents=True, exist_ok=True)
        key = base64.b64encode(os.urandom(32)).decode().rstrip("=")
        (self.dir / "signing.key").write_text(f"ed25519 a_test {key}\n")
        (self.dir / "homeserver.yaml").write_text(self._config())

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _config(self) -> str:
        d = self.dir
        return f"""\
server_name: "{SERVER_NAME}"
public_baseurl: "{self.url}/"
pid_file: {d}/homeserver.pid
listeners:
  - {{port: {self.port}, bind_addresses: ["{HOST}"], type: http, tls: false, x_forwarded: false,
     resources: [{{names: [client], compress: false}}]}}
database: {{name: sqlite3, args: {{database: {d}/homeserver.db}}}}
media_store_path: {d}/media
signing_key_path: {d}/signing.key
registration_shared_secret: "{SECRET}"
macaroon_secret_key: "m"
form_secret: "f"
report_stats: false
bcrypt_rounds: 4
trusted_key_servers: []
suppress_key_server_warning: true
enable_metrics: false
presence: {{enabled: false}}
rc_message: {_WIDE}
rc_registration: {_WIDE}
rc_joins_per_room: {_WIDE}
rc_login: {{address: {_WIDE}, account: {_WIDE}, failed_attempts: {_WIDE}}}
rc_joins: {{local: {_WIDE}, remote: {_WIDE}}}
rc_invites: {{per_room: {_WIDE}, per_user: {_WIDE}, per_issuer: {_WIDE}}}
rc_key_requests: {_WIDE}
"""

    def start(self) -> None:
        """Start it and wait (bounded) until ``/health`` answers; fail with its log if not."""
        log = open(self.dir / "synapse.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "synapse.app.homeserver",
                "-c",
                str(self.dir / "homeserver.yaml"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"synapse exited while starting:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            raise AssertionError(f"synapse not ready in {START_TIMEOUT} s:\n{self.log()}")
        if self.admin is None:
            self.admin = self.register("admin" + uuid.uuid4().hex[:6], admin=True)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log(self, n: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "synapse.log").read_text(errors="replace")[-n:]
        return ""

    def _http(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data, headers, method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def register(self, name: str | None = None, *, admin: bool = False) -> Registered:
        """A new account (``name``: a fresh one by default), registered with the secret."""
        user = name or "u" + uuid.uuid4().hex[:10]
        password = user + "-pw"
        nonce = self._http("GET", "/_synapse/admin/v1/register")["nonce"]
        mac = hmac.new(
            SECRET.encode(),
            b"\x00".join(
                [
                    nonce.encode(),
                    user.encode(),
                    password.encode(),
                    b"admin" if admin else b"notadmin",
                ]
            ),
            hashlib.sha1,
        ).hexdigest()
        got = self._http(
            "POST",
            "/_synapse/admin/v1/register",
            {"nonce": nonce, "username": user, "password": password, "admin": admin, "mac": mac},
        )
        return Registered(got["user_id"], password, got["access_token"], got["device_id"])

    def limit_messages(self, user_id: str, per_second: float, burst: int) -> None:
        """Tighten ``user_id``'s message rate limit (``rc_message`` for that user alone)."""
        assert self.admin is not None
        self._http(
            "POST",
            f"/_synapse/admin/v1/users/{user_id}/override_ratelimit",
            {"messages_per_second": per_second, "burst_count": burst},
            self.admin.access_token,
        )

    def unlimit_messages(self, user_id: str) -> None:
        """Give ``user_id`` the server's own message rate limit again."""
        assert self.admin is not None
        self._http(
            "DELETE",
            f"/_synapse/admin/v1/users/{user_id}/override_ratelimit",
            None,
            self.admin.access_token,
        )

    def api(self, method: str, path: str, token: str, body: Any = None) -> Any:
        """A client-server API call as the holder of ``token``."""
        return self._http(method, "/_matrix/client/v3" + path, body, token)


@contextlib.contextmanager
def running_synapse(directory: Path) -> Iterator[Synapse]:
    server = Synapse(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    """One Synapse for the whole test session."""
    try:
        server = Synapse(tmp_path_factory.mktemp("synapse"))
    except SynapseUnavailable as e:
        pytest.skip(str(e))
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- a client ----------------------------------------------------------------------------------


@dataclass
class Seen:
    """One room event a :class:`MatrixUser` received (decrypted when it could be)."""

    room: str
    event: dict[str, Any]

    @property
    def sender(self) -> str:
        return str(self.event.get("sender", ""))

    @property
    def content(self) -> dict[str, Any]:
        c = self.event.get("content")
        return c if isinstance(c, dict) else {}

    @property
    def body(self) -> str | None:
        b = self.content.get("body")
        return b if isinstance(b, str) else None

    @property
    def relates(self) -> dict[str, Any]:
        r = self.content.get("m.relates_to")
        return r if isinstance(r, dict) else {}


@dataclass
class MatrixUser:
    """A person on the homeserver: a matrix-nio client syncing in the background."""

    client: Any
    user_id: str
    seen: list[Seen] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _new: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def login(cls, server: Synapse, reg: Registered, store: Path) -> MatrixUser:
        from nio import AsyncClient, AsyncClientConfig, Event

        await asyncio.to_thread(store.mkdir, parents=True, exist_ok=True)
        client = AsyncClient(
            server.url,
            reg.user_id,
            store_path=str(store),
            config=AsyncClientConfig(store_sync_tokens=False, encryption_enabled=True),
        )
        client.restore_login(reg.user_id, reg.device_id, reg.access_token)
        user = cls(client, reg.user_id)

        def record(room: Any, event: Any) -> None:
            user.seen.append(Seen(room.room_id, dict(event.source)))
            user._new.set()

        client.add_event_callback(record, Event)
        flt = {"room": {"timeline": {"limit": 500}}, "presence": {"types": []}}
        await client.sync(timeout=0, sync_filter=flt)  # the backlog is not news
        user.seen.clear()
        user._task = asyncio.ensure_future(
            client.sync_forever(timeout=500, sync_filter=flt, loop_sleep_time=10)
        )
        return user

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._task, 5)
        await self.client.close()

    def mark(self) -> int:
        return len(self.seen)

    async def wait(
        self, match: Callable[[Seen], bool], *, since: int = 0, timeout: float = WAIT
    ) -> Seen:
        """The first event from ``since`` on that ``match`` takes (AssertionError after
        ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            for s in self.seen[since:]:
                if match(s):
                    return s
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.user_id}: no matching event in {timeout} s")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), left)

    def messages(self, sender: str, room: str, since: int = 0) -> list[Seen]:
        return [
            s
            for s in self.seen[since:]
            if s.sender == sender and s.room == room and s.event.get("type") == "m.room.message"
        ]

    async def send(self, room: str, body: str, **content: Any) -> str:
        """Send an ``m.text`` (extra content keys merged); its event id."""
        from nio import RoomSendResponse

        resp = await self.client.room_send(
            room,
            "m.room.message",
            {"msgtype": "m.text", "body": body, **content},
            ignore_unverified_devices=True,
        )
        assert isinstance(resp, RoomSendResponse), resp
        return str(resp.event_id)

    async def send_raw(self, room: str, event_type: str, content: dict[str, Any]) -> str | None:
        """Send any event content as it is, unencrypted (hostile events); its event id, or
        None when the homeserver refused it."""
        from nio import RoomSendResponse

        resp = await self.client.room_send(room, event_type, content)
        return str(resp.event_id) if isinstance(resp, RoomSendResponse) else None

    async def create_room(self, *, invite: list[str], encrypted: bool = False) -> str:
        from nio import RoomCreateResponse

        state = []
        if encrypted:
            state.append(
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            )
        resp = await self.client.room_create(invite=invite, initial_state=state)
        assert isinstance(resp, RoomCreateResponse), resp
        return str(resp.room_id)


@contextlib.asynccontextmanager
async def matrix_users(
    server: Synapse, store: Path, *regs: Registered
) -> AsyncIterator[list[MatrixUser]]:
    users: list[MatrixUser] = []
    try:
        for reg in regs:
            users.append(await MatrixUser.login(server, reg, store / reg.user_id))
        yield users
    finally:
        await asyncio.gather(*(u.close() for u in users))


@pytest_asyncio.fixture(loop_scope="session")
async def synapse_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Synapse]]:
    """Synapses of the test's own (stopped at its end)."""
    made: list[Synapse] = []

    def make(port: int | None = None) -> Synapse:
        try:
            server = Synapse(tmp_path / f"synapse{len(made)}", port)
        except SynapseUnavailable as e:
            pytest.skip(str(e))
        made.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in made:
            server.stop()
