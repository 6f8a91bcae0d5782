"""Real IRC servers on loopback for the IRC connector's tests, and a tiny raw IRC client.

* ``ngircd``: a plain ngircd 26 (no accounts, ready in ~0.1 s), session-scoped.
* ``ngircd_tls``: another ngircd with a TLS port too (a self-signed certificate for
  localhost/127.0.0.1; its path is ``server.cert`` for the connector's ``ca_file``).
* ``ngircd_factory``: function-scoped; ``await``-free helpers to start servers of one's own
  (e.g. to kill ngircd and start it again on the same port).
* ``inspircd_anope``: InspIRCd 3 + Anope 2 services (SASL PLAIN), with the account
  ``alice`` / ``alicepass123`` registered through NickServ; ~4 s to start, session-scoped.

Recipes (config keys, pitfalls) are in PEERS.md section 1. A missing binary skips the test with
the reason; a server that exits while starting fails it with the server's output.

:class:`IrcClient` is a raw asyncio-streams client (NICK/USER, 001, JOIN, PRIVMSG, PING/PONG,
bounded waits on the lines received) for tests and benchmarks: simpler and faster than pydle.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
SASL_ACCOUNT = ("alice", "alicepass123")
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class ServerUnavailable(Exception):
    """A server binary is not installed (tests skip, benchmarks say so)."""


def find_binary(name: str) -> str | None:
    """``name`` on PATH, or in an sbin directory (PATH of non-root users often lacks them)."""
    found = shutil.which(name)
    if found:
        return found
    for d in _SBIN:
        path = os.path.join(d, name)
        if os.access(path, os.X_OK):
            return path
    return None


def _need(name: str, package: str | None = None) -> str:
    path = find_binary(name)
    if path is None:
        raise ServerUnavailable(
            f"{name} is not installed (apt-get install --no-install-recommends {package or name};"
            " .ci/run and `make chat-servers` do it)"
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = HOST) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def _stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def make_cert(directory: Path, names: str = "DNS:localhost,IP:127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for ``names`` (a subjectAltName value; openssl CLI)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    openssl = _need("openssl")
    subprocess.run(
        [
            openssl,
            *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", f"subjectAltName={names}"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


# -- ngircd -----------------------------------------------------------------------------------


class Ngircd:
    """One ngircd on 127.0.0.1: ``start()`` / ``stop()`` / ``kill()``, same ports each time."""

    def __init__(self, directory: Path, *, tls: bool = False) -> None:
        self.binary = _need("ngircd")
        self.dir = directory
        self.port = free_port()
        self.tls_port: int | None = None
        self.cert: Path | None = None
        self.key: Path | None = None
        (directory / "conf.d").mkdir(parents=True, exist_ok=True)
        if tls:
            self.cert, self.key = make_cert(directory)
            self.tls_port = free_port()
        self.config = (directory / "ngircd.conf").resolve()  # absolute: REHASH needs it
        self.config.write_text(self._config())
        self.log = directory / "ngircd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _config(self) -> str:
        text = f"""\
[Global]
Name = irc.test.local
Info = eevee test ircd
AdminInfo1 = test
AdminInfo2 = test
AdminEMail = test@localhost
Listen = {HOST}
Ports = {self.port}
[Limits]
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 30
MaxPenaltyTime = 0
[Options]
DNS = no
Ident = no
PAM = no
IncludeDir = {self.dir.resolve() / "conf.d"}
"""
        if self.tls_port is not None:
            text += f"""\
[SSL]
CertFile = {self.cert}
KeyFile = {self.key}
Ports = {self.tls_port}
"""
        return text

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start (again) on the same ports; returns once the plain port accepts connections."""
        assert not self.running, "ngircd is already running"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-n", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        ports = [self.port] + ([self.tls_port] if self.tls_port else [])
        while not all(port_open(p) for p in ports):
            if self.proc.poll() is not None:
                raise RuntimeError(f"ngircd exited with {self.proc.returncode}:\n{_tail(self.log)}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"ngircd not listening after {START_TIMEOUT} s:\n{_tail(self.log)}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        _stop(self.proc)

    def kill(self) -> None:
        """SIGKILL: every client connection drops at once, no QUIT/ERROR sent."""
        _stop(self.proc, signal.SIGKILL)


@contextlib.contextmanager
def running_ngircd(tls: bool = False) -> Iterator[Ngircd]:
    """An ngircd in a temporary directory, stopped and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="ngircd-") as tmp:
        server = Ngircd(Path(tmp), tls=tls)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def _skip_unavailable(fn: Callable[[], Ngircd]) -> Ngircd:
    try:
        return fn()
    except ServerUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def ngircd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ngircd]:
    """A plain ngircd for the whole session (``.port``)."""
    server = _skip_unavailable(lambda: Ngircd(tmp_path_factory.mktemp("ngircd")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ngircd_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ngircd]:
    """An ngircd with ``.tls_port`` too; ``.cert`` is its self-signed certificate."""
    server = _skip_unavailable(lambda: Ngircd(tmp_path_factory.mktemp("ngircd-tls"), tls=True))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ngircd_factory(tmp_path: Path) -> Iterator[Callable[..., Ngircd]]:
    """``ngircd_factory(tls=False)`` starts an ngircd of the test's own (restartable)."""
    servers: list[Ngircd] = []

    def make(tls: bool = False) -> Ngircd:
        server = _skip_unavailable(lambda: Ngircd(tmp_path / f"ngircd{len(servers)}", tls=tls))
        servers.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


# -- InspIRCd + Anope (SASL) --------------------------------------------------------------------


class InspircdAnope:
    """InspIRCd 3 linked to Anope 2 services: SASL PLAIN, NickServ accounts."""

    def __init__(self, directory: Path) -> None:
        self.inspircd = _need("inspircd")
        self.anope = _need("anope")
        self.dir = directory.resolve()
        self.port = free_port()
        self.link_port = free_port()
        self.log = self.dir / "inspircd.log"
        self.procs: list[subprocess.Popen[bytes]] = []
        for sub in ("conf", "data", "logs"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        nickserv = Path("/etc/anope/nickserv.conf").read_text()
        nickserv = nickserv.replace("forceemail = yes", "forceemail = no")
        nickserv = nickserv.replace("regdelay = 30s", "regdelay = 0s")
        (self.dir / "conf" / "nickserv.conf").write_text(nickserv)
        d = self.dir
        (d / "inspircd.conf").write_text(f"""\
<server name="irc.test.local" description="t" network="TestNet">
<admin name="a" nick="a" email="a@localhost">
<bind address="{HOST}" port="{self.port}" type="clients">
<bind address="{HOST}" port="{self.link_port}" type="servers">
<connect name="main" allow="*" threshold="1000" commandrate="100000" fakelag="no" \
localmax="1000" globalmax="1000" limit="5000" resolvehostnames="no" useident="no">
<dns server="127.0.0.1" timeout="1">
<pid file="{d}/inspircd.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" flush="1" target="{self.log}">
<module name="spanningtree"><module name="services_account"><module name="sasl">
<module name="hidechans">
<module name="cap"><module name="ircv3"><module name="ircv3_accounttag">
<module name="ircv3_servertime"><module name="ircv3_echomessage"><module name="ircv3_msgid">
<link name="services.test.local" ipaddr="127.0.0.1" port="{self.link_port}" \
allowmask="127.0.0.0/8" sendpass="linkpass" recvpass="linkpass">
<uline server="services.test.local" silent="yes">
<sasl target="services.test.local" requiressl="no">
""")
        (d / "conf" / "services.conf").write_text(f"""\
uplink {{ host = "127.0.0.1"; ipv6 = no; ssl = no; port = {self.link_port}; \
password = "linkpass" }}
serverinfo {{ name = "services.test.local"; description = "Services"; pid = "{d}/anope.pid"; \
motd = "/etc/anope/services.motd" }}
module {{ name = "inspircd3"; use_server_side_mlock = yes; use_server_side_topiclock = yes }}
networkinfo {{ networkname = "TestNet"; nicklen = 30; userlen = 10; hostlen = 64; \
chanlen = 32; modelistsize = 100; \
vhost_chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-"; \
allow_undotted_vhosts = false; disallow_start_or_end = ".-" }}
options {{ seed = 1234567; casemap = "rfc1459"; strictpasswords = no; badpasslimit = 50; \
badpasstimeout = 1h; updatetimeout = 5m; expiretimeout = 30m; readtimeout = 5s; \
warningtimeout = 4h; timeoutcheck = 3s; retrywait = 1s; hideprivilegedcommands = yes; \
hideregisteredcommands = yes }}
include {{ type = "file"; name = "nickserv.conf" }}
log {{ target = "services.log"; bot = "Global"; logage = 1; admin = "*"; commands = "*"; \
servers = "*"; users = "*"; other = "*" }}
mail {{ usemail = no; sendfrom = "services@localhost" }}
module {{ name = "db_flatfile"; database = "anope.db"; fork = no }}
module {{ name = "enc_sha256" }}
module {{ name = "m_sasl" }}
""")

    def _spawn(self, args: list[str], out: str) -> subprocess.Popen[bytes]:
        with (self.dir / out).open("ab") as f:
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, cwd=self.dir
            )
        self.procs.append(proc)
        return proc

    def output(self) -> str:
        return "\n".join(
            f"--- {name}\n{_tail(self.dir / name)}"
            for name in ("inspircd.out", "inspircd.log", "anope.out")
        )

    def start(self) -> None:
        d = self.dir
        ircd = self._spawn(
            [self.inspircd, "--nofork", "--runasroot", f"--config={d}/inspircd.conf"],
            "inspircd.out",
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not (port_open(self.port) and port_open(self.link_port)):
            if ircd.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"inspircd did not start:\n{self.output()}")
            time.sleep(0.02)
        services = self._spawn(
            [
                self.anope,
                "--nofork",
                f"--confdir={d}/conf",
                f"--dbdir={d}/data",
                f"--logdir={d}/logs",
                "--modulesdir=/usr/lib/anope",
                "--localedir=/usr/share/anope/locale",
            ],
            "anope.out",
        )
        self.services = services

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)

    async def register(self, account: str, password: str) -> None:
        """Register a NickServ account (connected as ``account``; e-mail account@example.com).

        Anope links ~3 s after its start (it sleeps after warning about root); until then
        NickServ does not exist, so this asks again until NickServ answers. (InspIRCd's log is
        buffered until it exits: no use for readiness.)
        """
        client = await IrcClient.connect(self.port, account)
        try:
            deadline = time.monotonic() + START_TIMEOUT + 5
            while True:
                mark = client.mark()
                await client.privmsg("NickServ", f"REGISTER {password} {account}@example.com")
                with contextlib.suppress(AssertionError):
                    line = await client.wait(
                        lambda m: (
                            (m.command == "NOTICE" and m.nick == "NickServ") or m.command == "401"
                        ),
                        since=mark,
                        timeout=2,
                    )
                    if line.command == "NOTICE":
                        assert "registered" in line.text.lower(), line.raw
                        return
                if any(p.poll() is not None for p in self.procs) or time.monotonic() > deadline:
                    raise RuntimeError(f"anope never linked to inspircd:\n{self.output()}")
                await asyncio.sleep(0.2)
        finally:
            await client.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def inspircd_anope(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InspircdAnope]:
    """Started once; the NickServ account ``alice`` / ``alicepass123`` exists."""
    try:
        server = InspircdAnope(tmp_path_factory.mktemp("inspircd"))
    except ServerUnavailable as e:
        pytest.skip(str(e))
    try:
        await asyncio.to_thread(server.start)  # ~3.5 s: off the loop the bus clients share
        await server.register(*SASL_ACCOUNT)
        yield server
    finally:
        await asyncio.to_thread(server.stop)


# -- raw client ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One IRC line received: ``raw`` bytes (no CRLF) and its parsed parts."""

    data: bytes
    prefix: str
    command: str
    params: tuple[str, ...]

    @property
    def raw(self) -> str:
        return self.data.decode("utf-8", "replace")

    @property
    def nick(self) -> str:
        return self.prefix.split("!", 1)[0]

    @property
    def text(self) -> str:
        return self.params[-1] if self.params else ""

    @classmethod
    def parse(cls, data: bytes) -> Line:
        s = data.decode("utf-8", "replace")
        if s.startswith("@"):
            s = s.split(" ", 1)[1] if " " in s else ""
        prefix = ""
        if s.startswith(":"):
            prefix, _, s = s[1:].partition(" ")
        trailing = None
        if " :" in s:
            s, trailing = s.split(" :", 1)
        elif s.startswith(":"):
            s, trailing = "", s[1:]
        parts = s.split()
        command = parts[0].upper() if parts else ""
        params = parts[1:] + ([trailing] if trailing is not None else [])
        return cls(data, prefix, command, tuple(params))


class IrcClient:
    """A raw IRC client: every line received is kept in ``lines``; waits are bounded."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, nick: str):
        self.reader, self.writer, self.nick = reader, writer, nick
        self.lines: list[Line] = []
        self._changed = asyncio.Event()
        self.closed = False
        self._task = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(
        cls,
        port: int,
        nick: str,
        *,
        host: str = HOST,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> IrcClient:
        """Connected and registered (001 received)."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=tls, server_hostname="localhost" if tls else None
            ),
            timeout,
        )
        with contextlib.suppress(OSError, AttributeError):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = cls(reader, writer, nick)
        await client.send(f"NICK {nick}", f"USER {nick} 0 * :eevee test client {nick}")
        try:
            await client.wait(
                lambda m: m.command in ("001", "433", "432", "ERROR"), timeout=timeout
            )
            bad = [m for m in client.lines if m.command in ("433", "432", "ERROR")]
            if bad:
                raise AssertionError(f"{nick} could not register: {bad[0].raw}")
        except BaseException:
            await client.close()
            raise
        return client

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.readuntil(b"\n")
                data = data.rstrip(b"\r\n")
                if not data:
                    continue
                line = Line.parse(data)
                if line.command == "PING":
                    self.writer.write(b"PONG :" + line.text.encode() + b"\r\n")
                self.lines.append(line)
                self._changed.set()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            self.closed = True
            self._changed.set()

    async def send(self, *lines: str) -> None:
        self.writer.write(b"".join(line.encode() + b"\r\n" for line in lines))
        await self.writer.drain()

    async def privmsg(self, target: str, text: str) -> None:
        await self.send(f"PRIVMSG {target} :{text}")

    def mark(self) -> int:
        """The position to look from in a later ``wait``: only lines received after now."""
        return len(self.lines)

    async def wait(
        self, pred: Callable[[Line], bool], *, since: int = 0, timeout: float = 5.0
    ) -> Line:
        """The first line from ``since`` on that matches ``pred``; AssertionError on timeout."""
        deadline = asyncio.get_running_loop().time() + timeout
        i = since
        while True:
            while i < len(self.lines):
                if pred(self.lines[i]):
                    return self.lines[i]
                i += 1
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0 or self.closed:
                tail = "\n".join(m.raw for m in self.lines[since:][-20:])
                why = "connection closed" if self.closed else f"nothing within {timeout} s"
                raise AssertionError(f"{self.nick}: {why}; lines since mark:\n{tail}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def more(self, timeout: float) -> None:
        """Until a line arrives (or the connection closes), at most ``timeout`` seconds."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def messages(
        self, *, since: int = 0, source: str | None = None, target: str | None = None
    ) -> list[Line]:
        """PRIVMSGs received from ``since`` on (optionally from ``source`` to ``target``)."""
        return [
            m
            for m in self.lines[since:]
            if m.command == "PRIVMSG"
            and (source is None or m.nick.lower() == source.lower())
            and (target is None or m.params[0].lower() == target.lower())
        ]

    async def reply(self, source: str, target: str, *, since: int, timeout: float = 5.0) -> Line:
        """The first PRIVMSG from ``source`` to ``target`` received after ``since``."""
        return await self.wait(
            lambda m: (
                m.command == "PRIVMSG"
                and m.nick.lower() == source.lower()
                and m.params[0].lower() == target.lower()
            ),
            since=since,
            timeout=timeout,
        )

    async def join(self, channel: str, timeout: float = 5.0) -> None:
        mark = self.mark()
        await self.send(f"JOIN {channel}")
        await self.wait(
            lambda m: m.command == "366" and m.params[1].lower() == channel.lower(),
            since=mark,
            timeout=timeout,
        )

    async def names(self, channel: str, timeout: float = 5.0) -> set[str]:
        """The nicks in ``channel`` (NAMES), without their prefixes."""
        mark = self.mark()
        await self.send(f"NAMES {channel}")
        await self.wait(lambda m: m.command == "366", since=mark, timeout=timeout)
        nicks: set[str] = set()
        for m in self.lines[mark:]:
            if m.command == "353" and m.params[-2].lower() == channel.lower():
                nicks.update(n.lstrip("~&@%+") for n in m.text.split())
        return nicks

    async def whois(self, nick: str, timeout: float = 5.0) -> list[Line]:
        """The WHOIS reply lines up to 318 (end of WHOIS)."""
        mark = self.mark()
        await self.send(f"WHOIS {nick}")
        await self.wait(lambda m: m.command == "318", since=mark, timeout=timeout)
        return self.lines[mark:]

    async def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                await self.send("QUIT :bye")
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task


def tls_context(cafile: Path | None) -> ssl.SSLContext:
    """A verifying client context that trusts ``cafile``."""
    return ssl.create_default_context(cafile=str(cafile) if cafile else None)
