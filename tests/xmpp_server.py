"""A real Prosody on loopback for the XMPP connector's tests, and a small slixmpp test client.

* :class:`Prosody`: one server in a directory of its own, on free ports: c2s with optional
  STARTTLS, direct TLS, a MUC component ``conference.localhost`` whose rooms reveal real JIDs,
  stream management (XEP-0198), ping; a self-signed certificate for ``localhost`` and
  ``conference.localhost`` (:attr:`Prosody.cert`, the CA file of a verifying client). Users
  are added with ``prosodyctl register``. ``start()`` / ``stop()`` / ``kill()`` keep the ports
  and data, so a test can restart it. Nagle stays on, as deployed servers run it.
* ``prosody``: session-scoped; ``prosody_factory``: function-scoped, for servers a test stops.
* :class:`XmppClient`: a slixmpp client that joins rooms and collects what it receives, with
  bounded waits.

Recipe and pitfalls: PEERS.md section 2. A missing binary skips the test with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import slixmpp

from tests.irc_servers import (
    HOST,
    START_TIMEOUT,
    ServerUnavailable,
    _need,
    _stop,
    _tail,
    free_port,
    make_cert,
    port_open,
)

DOMAIN = "localhost"
MUC = "conference.localhost"
WAIT = 10.0


class Prosody:
    """One Prosody on 127.0.0.1 in ``directory``, on the same ports at every ``start()``."""

    def __init__(self, directory: Path) -> None:
        self.prosody = _need("prosody")
        self.prosodyctl = _need("prosodyctl", "prosody")
        self.dir = directory
        self.port = free_port()
        self.tls_port = free_port()
        (directory / "data").mkdir(parents=True, exist_ok=True)
        self.cert, self.key = make_cert(directory, f"DNS:{DOMAIN},DNS:{MUC}")
        self.config = directory / "prosody.cfg.lua"
        self.config.write_text(self._config())
        self.log = directory / "prosody.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _config(self) -> str:
        d = self.dir
        ssl = f'ssl = {{ certificate = "{self.cert}", key = "{self.key}" }}'
        return f"""
run_as_root = true
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
certificates = "{d}"
plugin_paths = {{}}
log = {{ {{ levels = {{ min = "info" }}, to = "console" }} }}
interfaces = {{ "{HOST}" }}
c2s_ports = {{ {self.port} }}
c2s_direct_tls_ports = {{ {self.tls_port} }}
s2s_ports = {{}}
http_ports = {{}}
https_ports = {{}}
{ssl}
c2s_direct_tls_ssl = {{ certificate = "{self.cert}", key = "{self.key}" }}
modules_enabled = {{ "roster", "saslauth", "tls", "disco", "ping", "register", "posix", "smacks" }}
modules_disabled = {{ "s2s", "offline" }}
authentication = "internal_hashed"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
allow_registration = true
min_seconds_between_registrations = 0
smacks_hibernation_time = 60
VirtualHost "{DOMAIN}"
    {ssl}
Component "{MUC}" "muc"
    {ssl}
    restrict_room_creation = false
    muc_room_locking = false
    muc_room_default_public_jids = true
    muc_room_default_history_length = 20
"""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def register(self, user: str, password: str) -> str:
        """Add ``user@localhost`` (works whether or not the server runs); its JID."""
        subprocess.run(
            [self.prosodyctl, "--config", str(self.config), "register", user, DOMAIN, password],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return f"{user}@{DOMAIN}"

    def start(self) -> None:
        out = self.log.open("ab")
        try:
            self.proc = subprocess.Popen(
                [self.prosody, "--config", str(self.config), "-F"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.dir,
            )
        finally:
            out.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not (port_open(self.port) and port_open(self.tls_port)):
            if self.proc.poll() is not None:
                raise AssertionError(f"prosody exited while starting:\n{_tail(self.log)}")
            if time.monotonic() > deadline:
                _stop(self.proc)
                raise AssertionError(f"prosody not ready in {START_TIMEOUT} s:\n{_tail(self.log)}")
            time.sleep(0.02)

    def stop(self) -> None:
        _stop(self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def output(self) -> str:
        return _tail(self.log)


def _make(directory: Path) -> Prosody:
    try:
        return Prosody(directory)
    except ServerUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prosody]:
    """One Prosody for the session (tests use rooms and users of their own)."""
    server = _make(tmp_path_factory.mktemp("prosody"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prosody_factory(tmp_path: Path) -> Iterator[Callable[[], Prosody]]:
    """Servers of the test's own (not started); all stopped at the end."""
    made: list[Prosody] = []

    def make() -> Prosody:
        made.append(_make(tmp_path / f"prosody{len(made)}"))
        return made[-1]

    try:
        yield make
    finally:
        for server in made:
            server.stop()


# -- the test client --------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """A message the test client received."""

    kind: str  # "groupchat" or "chat"
    sender: str  # full JID (room/nick in a room)
    body: str
    delayed: bool
    stanza: str = field(repr=False, default="")


class XmppClient(slixmpp.ClientXMPP):  # type: ignore[misc]
    """A plain-text slixmpp client on loopback that collects what it receives."""

    def __init__(self, jid: str, password: str, nick: str, *, quickack: bool = False) -> None:
        super().__init__(
            jid,
            password,
            plugin_config={
                "feature_mechanisms": {"unencrypted_scram": True, "unencrypted_plain": True}
            },
        )
        self.enable_direct_tls = False
        self.enable_starttls = False
        self.enable_plaintext = True
        self.nick = nick
        self.quickack = quickack
        self.received: list[Received] = []
        self._new = asyncio.Event()
        self._started = asyncio.Event()
        for p in ("xep_0030", "xep_0045", "xep_0199", "xep_0203"):
            self.register_plugin(p)
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("message", self._on_message)

    def data_received(self, data: bytes | str) -> None:
        if self.quickack and self.transport is not None:  # see operators/xmpp/client.py
            sock = self.transport.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        super().data_received(data)

    @classmethod
    async def connected(
        cls, server: Prosody, user: str, password: str = "pw", *, quickack: bool = False
    ) -> XmppClient:
        """A client of the new user ``user@localhost``, connected and present."""
        jid = server.register(user, password)
        client = cls(jid, password, user, quickack=quickack)
        client.connect(HOST, server.port)
        await asyncio.wait_for(client._started.wait(), WAIT)
        return client

    async def _on_start(self, _event: Any) -> None:
        self.send_presence()
        self._started.set()

    def _on_message(self, msg: Any) -> None:
        if msg["type"] not in ("groupchat", "chat") or not msg["body"]:
            return
        delayed = msg.xml.find("{urn:xmpp:delay}delay") is not None
        self.received.append(
            Received(msg["type"], str(msg["from"]), msg["body"], delayed, str(msg))
        )
        self._new.set()

    async def join(self, room: str, nick: str | None = None) -> None:
        await self.plugin["xep_0045"].join_muc_wait(
            room, nick or self.nick, maxstanzas=0, timeout=WAIT
        )

    def say(self, room: str, text: str) -> None:
        self.send_message(mto=room, mbody=text, mtype="groupchat")

    def tell(self, jid: str, text: str) -> None:
        self.send_message(mto=jid, mbody=text, mtype="chat")

    def mark(self) -> int:
        return len(self.received)

    async def wait(
        self, match: Callable[[Received], bool], *, since: int = 0, timeout: float = WAIT
    ) -> Received:
        """The first message from ``since`` on that ``match`` takes, within ``timeout``."""
        deadline = time.monotonic() + timeout
        seen = since
        while True:
            for item in self.received[seen:]:
                if match(item):
                    return item
            seen = len(self.received)
            left = deadline - time.monotonic()
            if left <= 0:
                got = "\n".join(repr(r) for r in self.received[since:][-10:])
                raise AssertionError(f"no matching message in {timeout} s; got:\n{got}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), left)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.disconnect(), 3)


@contextlib.asynccontextmanager
async def xmpp_clients(server: Prosody, *users: str) -> AsyncIterator[list[XmppClient]]:
    """Connected clients of the new users ``users`` (unique in the session), closed at exit."""
    made: list[XmppClient] = []
    try:
        for user in users:
            made.append(await XmppClient.connected(server, user))
        yield made
    finally:
        await asyncio.gather(*(c.close() for c in made))


@pytest_asyncio.fixture(loop_scope="session")
async def proxy_factory() -> AsyncIterator[Callable[[int], Any]]:
    """TCP proxies to a port, whose connections a test can cut (a network drop)."""
    from tests.tcp_proxy import TcpProxy

    made: list[TcpProxy] = []

    async def make(port: int) -> TcpProxy:
        made.append(await TcpProxy.start(HOST, port))
        return made[-1]

    try:
        yield make
    finally:
        await asyncio.gather(*(p.close() for p in made))
