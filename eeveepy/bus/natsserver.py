"""The embedded nats-server that ``eevee up`` starts when the configuration names no bus URL.

The server runs as a child process of the supervisor. It is started in its own session, so a
Ctrl-C typed at the terminal reaches the supervisor only, and the supervisor decides when to
stop it; on Linux it is also tied to its parent with ``PR_SET_PDEATHSIG`` so it never outlives a
supervisor that dies without cleaning up. Its monitoring endpoint listens on a loopback port
it picks (read from its log, like the client port): reloads are confirmed through it, and it
says whether JetStream is on (``/jsz``).

Everything it writes lives under ``store_dir``::

    store_dir/
      conf/nats-server.conf    generated configuration (mode 0600: it holds passwords)
      nats-server.log          the server's stdout and stderr (truncated on every start,
                               appended to on a restart after a crash)
      jetstream/               JetStream storage (when enabled)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from eeveepy.aio import die_with_parent
from eeveepy.bus.natsconf import (
    INSTALL_HINT,
    NatsUser,
    check_config,
    fetch_monitor,
    find_nats_server,
    render_config,
    write_private,
)
from eeveepy.bus.natslog import (
    LISTEN_RE,
    MONITOR_RE,
    READY_MARKER,
    RELOAD_FAILED_RE,
    ServerLog,
    Setting,
    failure,
)
from eeveepy.errors import NatsServerError

__all__ = ["DEFAULT_MAX_PAYLOAD", "EmbeddedNats", "NatsUser", "find_nats_server"]

DEFAULT_MAX_PAYLOAD = 1024 * 1024
"""nats-server's own default ``max_payload`` (1 MiB), used when none is configured."""

_POLL_INTERVAL = 0.02
_KILL_WAIT = 5.0
_PR_SET_PDEATHSIG = 1


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
        self._monitor_port: int | None = None
        self._log = ServerLog(self._store_dir / "nats-server.log")
        self._reloading = asyncio.Lock()  # one reload at a time: each confirms its own

    # -- properties -------------------------------------------------------------------------

    @property
    def store_dir(self) -> Path:
        """The directory holding the configuration, the log and JetStream data."""
        return self._store_dir

    @property
    def log_path(self) -> Path:
        """The file the server's stdout and stderr go to."""
        return self._log.path

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
    def jetstream(self) -> bool:
        """Whether the server runs with JetStream (it may disable it: see ``/jsz``)."""
        return self._jetstream

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
        await self._launch(timeout, restart=False)

    async def restart(self, timeout: float = 10.0) -> None:
        """Start again after a crash: same port, users and JetStream store; the log is kept."""
        if self._port is not None:
            self._requested_port = self._port
        await self._launch(timeout, restart=True)

    async def _launch(self, timeout: float, *, restart: bool) -> None:
        if self.running:
            raise NatsServerError(f"the embedded nats-server is already running ({self.url})")
        self._proc = None
        binary = self._binary if self._binary is not None else find_nats_server()
        try:
            self._store_dir.mkdir(parents=True, exist_ok=True)
            self._write_config(self._render(self._users))
            # where the current run's lines begin in the log
            self._log.start = self.log_path.stat().st_size if restart else 0
        except OSError as exc:
            raise NatsServerError(
                f"cannot write the nats-server configuration under {self._store_dir}: {exc}"
            ) from None
        self._port = None
        self._monitor_port = None
        try:
            with self.log_path.open("ab" if restart else "wb") as log:
                # Popen (a quick fork/exec) rather than asyncio's subprocess API, so `running`
                # and the reaping in stop() work without the event loop's child watcher.
                self._proc = subprocess.Popen(  # noqa: ASYNC220
                    [str(binary), "-c", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self._store_dir,
                    start_new_session=True,
                    preexec_fn=die_with_parent(),
                )
        except OSError as exc:
            raise NatsServerError(
                f"could not run nats-server binary {binary}: {exc.strerror or exc}; "
                f"pass an existing binary or {INSTALL_HINT}"
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
            text = self._log.read()
            if READY_MARKER in text:
                ports = LISTEN_RE.findall(text)
                if not ports:
                    raise self._failure("nats-server is ready but its log names no client port")
                self._port = int(ports[-1])
                monitor = MONITOR_RE.findall(text)
                self._monitor_port = int(monitor[-1]) if monitor else None
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

    async def wait(self) -> int | None:
        """Wait until the process exits (reaped); its exit code (-N: killed by signal N)."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is not None:  # (checked first: a reaped pid may already be reused)
            return proc.returncode
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):  # no pidfd (old kernel, not Linux): poll
            await _wait_exit(proc, float("inf"), interval=0.2)
            return proc.returncode
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        try:
            loop.add_reader(fd, readable)
            await exited
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        return proc.wait()  # it has exited: this only reaps it

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
        """Replace the users: all of them, or none (a reload is a transaction).

        A running server gets the new configuration in three steps: ``nats-server -t`` checks
        it, SIGHUP applies it, and the server's ``/varz`` confirms it (the digest of the
        configuration it loaded, and a new load time), bounded by ``timeout``. If any step
        fails, the previous configuration is written and loaded again, and
        :class:`NatsServerError` says what failed; the users stay as they were. Connections of
        users that remain keep going; removed users are disconnected.
        """
        names = [u.user for u in users]
        if len(set(names)) != len(names):
            raise NatsServerError(f"duplicate user names in {names}")
        async with self._reloading:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                self._users = tuple(users)  # applied at the next (re)start
            elif tuple(users) != self._users:  # (else in force already)
                await self._load(proc, tuple(users), timeout)

    async def reload(self, timeout: float = 5.0) -> None:
        """Load the configuration in force again, confirmed as in :meth:`set_users`.

        After a write error (disk full, store not writable) nats-server disables JetStream
        until its configuration is reloaded: this is that reload. ``/jsz`` (:meth:`monitor`)
        says whether JetStream came back; it stays off while the store is still unusable.

        Raises:
            NatsServerError: when the server is not running or does not confirm the reload.
        """
        async with self._reloading:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                raise NatsServerError("the embedded nats-server is not running")
            await self._load(proc, self._users, timeout)

    async def monitor(self, endpoint: str, timeout: float = 1.0) -> dict[str, Any]:
        """The server's answer on its loopback monitoring ``endpoint`` (``varz``, ``jsz``);
        :class:`NatsServerError` when it has no monitoring port or does not answer."""
        if self._monitor_port is None:
            raise NatsServerError("nats-server has no monitoring port")
        return await fetch_monitor(self._monitor_port, endpoint, timeout)

    async def _load(
        self, proc: subprocess.Popen[bytes], users: tuple[NatsUser, ...], timeout: float
    ) -> None:
        """Apply the configuration for ``users``; on failure load the one in force again."""
        self._requested_port = self.port  # a reload must not move the server
        new = self._render(users)
        digest = await self._check(new)
        before = await self.monitor("varz", timeout)  # nothing is changed if the server cannot say
        try:
            await self._apply(proc, new, digest, before, timeout)
        except NatsServerError as exc:
            try:
                old = self._render(self._users)
                old_digest = await self._check(old)
                now = await self.monitor("varz", timeout)
                await self._apply(proc, old, old_digest, now, max(timeout, 5.0))
            except NatsServerError as again:
                raise NatsServerError(
                    f"{exc}; and restoring the previous configuration failed too: {again}"
                ) from None
            raise NatsServerError(f"{exc}; the previous configuration is back in force") from None
        self._users = users

    # -- internals ---------------------------------------------------------------------------

    def _render(self, users: Sequence[NatsUser]) -> str:
        return render_config(
            host=self._host,
            port=self._requested_port,
            users=users,
            max_payload=self._max_payload,
            jetstream_dir=self._store_dir.resolve() if self._jetstream else None,
        )

    async def _check(self, text: str) -> str | None:
        """Validate ``text`` with ``nats-server -t`` (the running server is not touched); the
        digest the server will report for it."""
        binary = self._binary if self._binary is not None else find_nats_server()
        check = self.config_path.with_name("check.conf")
        try:
            write_private(check, text)
            return await check_config(binary, check)
        except OSError as exc:
            raise NatsServerError(f"cannot write {check}: {exc}") from None
        finally:
            with contextlib.suppress(OSError):
                check.unlink()

    async def _apply(
        self,
        proc: subprocess.Popen[bytes],
        text: str,
        digest: str | None,
        before: dict[str, Any],
        timeout: float,
    ) -> None:
        """Write ``text``, SIGHUP, and wait for ``/varz`` to show it loaded (or a refusal)."""
        deadline = time.monotonic() + timeout
        log_mark = self._log.size()
        try:
            self._write_config(text)
        except OSError as exc:
            raise NatsServerError(f"cannot write {self.config_path}: {exc}") from None
        proc.send_signal(signal.SIGHUP)
        while True:
            remaining = deadline - time.monotonic()
            try:
                varz = await self.monitor("varz", max(0.1, min(1.0, remaining)))
            except NatsServerError:
                varz = {}
            loaded = varz.get("config_load_time")
            if loaded and loaded != before.get("config_load_time"):
                if digest is None or varz.get("config_digest") == digest:
                    return
                # Loaded, but not what was written: someone else's file (or a rollback race).
                raise NatsServerError(f"nats-server loaded another configuration ({digest})")
            refused = RELOAD_FAILED_RE.findall(self._log.read(log_mark))
            if refused:
                raise NatsServerError(f"nats-server refused the reload: {refused[-1]}")
            if proc.poll() is not None:
                raise NatsServerError("nats-server exited while reloading its configuration")
            if remaining <= 0:
                raise NatsServerError(
                    f"nats-server did not confirm the reload within {timeout:g} s"
                )
            await asyncio.sleep(_POLL_INTERVAL)

    def _write_config(self, text: str) -> None:
        """Replace the configuration file at once (a crash never leaves half of one)."""
        conf_dir = self.config_path.parent
        conf_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        conf_dir.chmod(0o700)
        tmp = self.config_path.with_suffix(".tmp")
        write_private(tmp, text)
        tmp.replace(self.config_path)

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
        setting = Setting(
            self._host, self._requested_port, self._store_dir, self.config_path, self.log_path
        )
        return failure(what, self._log, setting, hint)


async def _wait_exit(
    proc: subprocess.Popen[bytes], seconds: float, interval: float = _POLL_INTERVAL
) -> bool:
    """Poll ``proc`` until it exits (and is reaped) or ``seconds`` pass; True if it exited."""
    deadline = time.monotonic() + seconds
    while proc.poll() is None:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
    return True
