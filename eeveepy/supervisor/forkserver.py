"""A preloaded fork server: Python operators start in milliseconds instead of a fresh interpreter.

A fresh interpreter spends ~0.25 s of CPU importing nats-py, pydantic, structlog and eeveepy;
fifty operators started at once on two cores then need seconds. The fork server is one child
of the supervisor that imports all of that once and forks a child per ``module = ...`` operator,
which then runs the module as ``__main__`` (``python -m`` semantics). Forked children share the
preloaded pages copy-on-write, so they also use less memory.

Wire protocol between the supervisor and the server (a Unix socket pair, one JSON object per
line): the supervisor sends ``{"spawn": n, "module": ..., "argv": [...], "env": {...}, "cwd": ...}``
with the child's stdout and stderr pipe ends attached (SCM_RIGHTS); the server answers
``{"spawned": n, "pid": pid}`` or ``{"spawned": n, "error": "..."}``, and later reports
``{"exit": pid, "code": code}`` (negative: killed by that signal) when the child ends.

Lifetimes: the server dies with the supervisor (PR_SET_PDEATHSIG), children die with the
server; each child leads its own process group so the supervisor can signal it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from eeveepy.aio import die_with_parent
from eeveepy.errors import ForkServerError
from eeveepy.runtime.title import set_title
from eeveepy.supervisor import forkchild
from eeveepy.supervisor.forkchild import MAX_FDS
from eeveepy.supervisor.preload import (
    PRELOAD,
    Compiled,
    prebuild,
    preconfigure,
    rehearse_loop,
)
from eeveepy.supervisor.preload import preload as load
from eeveepy.supervisor.prepare import Prepared

if TYPE_CHECKING:
    from eeveepy.supervisor.prefork import ForkedProcess, PreForked

_BOOT = (
    "import gc; gc.disable(); from eeveepy.supervisor.unused import skip_unused; skip_unused();"
    " from eeveepy.supervisor.forkserver import main; main()"
)
"""The server's command: the collector off before the first import (see :func:`serve`),
integrations no operator needs from the server left out (:mod:`~eeveepy.supervisor.unused`)."""
SEND_TIMEOUT = 10.0
"""Seconds a spawn request waits for the server to read (as long as it waits for the pid)."""


# ---------------------------------------------------------------------------------------------
# The server process


def serve(
    sock: socket.socket,
    preload: Sequence[str],
    compiled: Mapping[str, Compiled] | None = None,
    *,
    prepared: bool = False,
) -> None:  # pragma: no cover - child
    """Be the fork server on ``sock`` (never returns): preload, then fork on request; each
    child of a module in ``compiled`` runs the code compiled there (see
    :func:`~eeveepy.supervisor.preload.compile_mains`). ``prepared``: forked from a process
    that did all of that already (see :mod:`~.prefork`), which holds what it built."""
    built: list[object] = []  # held for the server's life (this never returns): shared, not rebuilt
    if not prepared:
        load(preload)
        built += prebuild()
        preconfigure()
        built += rehearse_loop()
    # Out of the collector's sight: a collection in a child would otherwise write to every
    # preloaded object's header, and copy each page the children share. (No collection
    # first: the collector is off since start-up, so what it would free leaves no holes for
    # the children's new objects to fill, page by shared page.)
    # What makes each child die with this server, built once: a `ctypes.CDLL` built for each
    # child (a class of its own each time) wrote to pages every child forked before shared
    # with the server, and left each its own copy of them.
    tie = die_with_parent()
    preparer = Prepared(compiled)
    gc.freeze()
    rfd, wfd = os.pipe()
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    sock.setblocking(True)
    buf = b""
    # Each request's stdout and stderr come with its first byte; a request may take several
    # reads (a big environment, or one sent in parts), so they wait, in order, for its end.
    pending: list[int] = []
    # Where it imports from: the supervisor renews it when one of these changes (a package
    # installed since, whose .pth file only a new interpreter would read).
    sock.sendall(json.dumps({"ready": True, "path": sys.path}).encode() + b"\n")
    while True:
        try:
            ready, _, _ = select.select([sock.fileno(), rfd], [], [])
        except InterruptedError:
            continue
        if rfd in ready:
            os.read(rfd, 4096)
            _reap(sock)
        if sock.fileno() in ready:
            msg, fds, _, _ = socket.recv_fds(sock, 65536, MAX_FDS)
            if not msg:
                os._exit(0)  # the supervisor is gone
            buf += msg
            pending.extend(fds)
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                request = json.loads(line)
                child_fds, pending = pending[:MAX_FDS], pending[MAX_FDS:]
                preparer.first_spawn(request)
                _spawn(sock, rfd, wfd, request, child_fds, tie, preparer.compiled)


def _close(sock: socket.socket, rfd: int, wfd: int) -> None:  # pragma: no cover - child
    sock.close()
    os.close(rfd)
    os.close(wfd)


def _reap(sock: socket.socket) -> None:  # pragma: no cover - child
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        sock.sendall(json.dumps({"exit": pid, "code": code}).encode() + b"\n")


def _spawn(
    sock: socket.socket,
    rfd: int,
    wfd: int,
    request: dict[str, Any],
    fds: list[int],
    tie: Callable[[], None] | None,
    compiled: Mapping[str, Compiled] | None,
) -> None:  # pragma: no cover - child
    n = request.get("spawn")
    try:
        pid = os.fork()
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        sock.sendall(json.dumps({"spawned": n, "error": str(exc)}).encode() + b"\n")
        return
    if pid == 0:
        forkchild.child(lambda: _close(sock, rfd, wfd), request, fds, tie, compiled)
    for fd in fds:
        os.close(fd)
    sock.sendall(json.dumps({"spawned": n, "pid": pid}).encode() + b"\n")


def main() -> None:  # pragma: no cover - child
    """The server process: ``python -c _BOOT FD [MODULE...]`` (or ``-m`` this module)."""
    fd = int(sys.argv[1])
    set_title("eevee: fork server")
    sock = socket.socket(fileno=fd)
    serve(sock, [*PRELOAD, *sys.argv[2:]])


# ---------------------------------------------------------------------------------------------
# The supervisor's side


class ForkedChild:
    """A process spawned by the fork server; the subset of asyncio's Process the supervisor uses."""

    def __init__(self, pid: int, stdout: asyncio.StreamReader, stderr: asyncio.StreamReader):
        self.pid = pid
        self.stdout: asyncio.StreamReader | None = stdout
        self.stderr: asyncio.StreamReader | None = stderr
        self.returncode: int | None = None
        self._done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def wait(self) -> int:
        """Wait for the exit code (negative: the signal that killed it)."""
        return await asyncio.shield(self._done)

    def send_signal(self, signal: int) -> None:
        """Signal the process."""
        if self.returncode is None:
            os.kill(self.pid, signal)

    def _exited(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
        if not self._done.done():
            self._done.set_result(self.returncode)


class ForkServer:
    """The supervisor's handle on the fork server process."""

    def __init__(self, preload: Sequence[str] = ()) -> None:
        self.preload = list(preload)
        self._proc: subprocess.Popen[bytes] | ForkedProcess | None = None
        self._sock: socket.socket | None = None
        self._buf = b""
        self._next = 0
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._children: dict[int, ForkedChild] = {}
        self._early_exits: dict[int, int] = {}
        self._ready: asyncio.Future[None] | None = None
        self._log = structlog.get_logger("eeveepy.forkserver")
        self.path: list[str] = []
        """The server's ``sys.path`` (once started)."""
        self._shared: list[object] = []  # built before a pre-fork: freed, they would be copied
        self._sending = asyncio.Lock()
        """One request at a time on the socket (a request may take several sends)."""

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def busy(self) -> bool:
        """True while children it forked run (or are being forked)."""
        return bool(self._children or self._pending)

    async def start(self, timeout: float = 15.0, *, forked: PreForked | None = None) -> None:
        """Start the server (or take over ``forked``, see :mod:`~.prefork`) and wait
        (bounded) until its preloading is done."""
        if forked is not None:
            self._proc, ours = forked.process, forked.sock
            self._shared = forked.shared
        else:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self._proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once, no waiting
                    [sys.executable, "-c", _BOOT, str(theirs.fileno()), *self.preload],
                    pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=die_with_parent(),
                )
            finally:
                theirs.close()
        ours.setblocking(False)
        self._sock = ours
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        loop.add_reader(ours.fileno(), self._on_readable)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except (TimeoutError, ForkServerError):
            await self.stop()
            raise ForkServerError("the fork server did not start") from None

    async def spawn(
        self, module: str, argv: Sequence[str], env: dict[str, str], cwd: str | None = None
    ) -> ForkedChild:
        """Run ``module`` as ``__main__`` in a forked child with ``env``; returns at once."""
        sock = self._sock
        if sock is None or not self.running:
            raise ForkServerError("the fork server is not running")
        loop = asyncio.get_running_loop()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        self._next += 1
        n = self._next
        fut: asyncio.Future[int] = loop.create_future()
        self._pending[n] = fut
        request = {"spawn": n, "module": module, "argv": list(argv), "env": env, "cwd": cwd}
        try:
            async with self._sending:
                await self._send(sock, json.dumps(request).encode() + b"\n", [out_w, err_w])
        except (OSError, TimeoutError) as exc:
            self._pending.pop(n, None)
            for fd in (out_r, err_r):
                os.close(fd)
            raise ForkServerError(f"cannot reach the fork server: {exc!r}") from None
        finally:
            os.close(out_w)
            os.close(err_w)
        try:
            pid = await asyncio.wait_for(fut, 10)
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        stdout = await _reader(out_r)
        stderr = await _reader(err_r)
        child = ForkedChild(pid, stdout, stderr)
        self._children[pid] = child
        if pid in self._early_exits:
            child._exited(self._early_exits.pop(pid))
        return child

    async def _send(self, sock: socket.socket, data: bytes, fds: list[int]) -> None:
        """Send one request without blocking the event loop: a start of many operators fills
        the socket faster than the server forks, and a blocking send would stop every ping and
        control request meanwhile (or deadlock with a server blocked on its own answers).
        The descriptors go with the first byte. A server that reads nothing for
        :data:`SEND_TIMEOUT` seconds is given up on (stopped, if half a request was sent)."""
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        while view:
            try:
                sent = socket.send_fds(sock, [view], fds) if fds else sock.send(view)
            except BlockingIOError:
                writable = loop.create_future()
                loop.add_writer(sock, _resolve, writable)
                try:
                    await asyncio.wait_for(writable, SEND_TIMEOUT)
                except TimeoutError:
                    if len(view) < len(data):  # the stream is cut mid-request
                        self._lost("the fork server stopped reading mid-request")
                        self._proc_kill()
                    raise
                finally:
                    loop.remove_writer(sock)
                continue
            view, fds = view[sent:], []

    def _proc_kill(self) -> None:
        """Kill the server now (its children die with it); :meth:`stop` still cleans up."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(OSError):
                self._proc.kill()

    async def stop(self) -> None:
        """Stop the server (its children die with it). Idempotent, bounded."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            for _ in range(100):
                if proc.poll() is not None:
                    break
                await asyncio.sleep(0.02)
            else:
                proc.kill()
                proc.wait()
        self._lost("the fork server stopped")

    def _lost(self, why: str) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ForkServerError(why))
        self._pending.clear()
        for child in self._children.values():
            child._exited(-signal.SIGKILL)
        self._children.clear()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(ForkServerError(why))

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            self._log.warning("fork server exited")
            self._lost("the fork server exited")
            return
        self._buf += data
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            self._handle(json.loads(line))

    def _handle(self, msg: dict[str, Any]) -> None:
        if "ready" in msg:
            self.path = [str(p) for p in msg.get("path") or []]
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        elif "spawned" in msg:
            fut = self._pending.pop(int(msg["spawned"]), None)
            if fut is not None and not fut.done():
                if "pid" in msg:
                    fut.set_result(int(msg["pid"]))
                else:
                    fut.set_exception(ForkServerError(str(msg.get("error"))))
        elif "exit" in msg:
            pid, code = int(msg["exit"]), int(msg["code"])
            child = self._children.pop(pid, None)
            if child is not None:
                child._exited(code)
            else:  # exited before spawn() returned
                self._early_exits[pid] = code


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _reader(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    protocol = asyncio.StreamReaderProtocol(reader)
    await loop.connect_read_pipe(lambda: protocol, os.fdopen(fd, "rb", buffering=0))
    return reader


if __name__ == "__main__":  # pragma: no cover
    main()
