"""The fork server forked from ``eevee up`` itself, so that it shares the supervisor's pages.

Started as a fresh interpreter, the fork server imports nats-py, pydantic, structlog and
eeveepy a second time: the supervisor and the server then each hold their own copy of the same
code and objects. Forked from ``eevee up`` before anything runs (no thread, no event loop, no
bus, no state directory taken), the server and every operator it forks share the supervisor's
copy instead, page by page, until one of them writes to a page.

:func:`prefork` forks it; the :class:`~eeveepy.supervisor.forkserver.ForkServer` that the
supervisor's launcher starts first takes it over (:meth:`ForkServer.start` with ``forked``).
A fork server renewed later (packages changed) is a fresh interpreter, as is the first one
when nothing was pre-forked (a supervisor run in-process, as the tests and benchmarks do).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from eeveepy.aio import die_with_parent
from eeveepy.protocol.codec import AnyEnvelopeDecoder
from eeveepy.runtime.title import set_title
from eeveepy.supervisor.forkserver import serve
from eeveepy.supervisor.preload import (
    PRELOAD,
    Compiled,
    compile_mains,
    operator_imports,
    prebuild,
    preconfigure,
    preload,
    rehearse_loop,
)

__all__ = ["ForkedProcess", "PreForked", "prefork"]


class ForkedProcess:
    """The server process, with the part of :class:`subprocess.Popen` the supervisor uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code once it has ended (reaped here), else None."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1  # reaped elsewhere: it has ended all the same
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def terminate(self) -> None:
        """SIGTERM it."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL it."""
        self._signal(signal.SIGKILL)

    def wait(self) -> int:
        """Wait for the end (only after :meth:`kill`: it is quick)."""
        while True:
            code = self.poll()
            if code is not None:
                return code
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)

    def _signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


@dataclass
class PreForked:
    """A fork server forked by :func:`prefork`, not yet taken over: its process and our end
    of its socket. :meth:`close` ends it if nobody takes it."""

    process: ForkedProcess
    sock: socket.socket
    shared: list[object] = field(default_factory=list)
    """What was built for the server before the fork: held while the server lives (freed,
    its pages would be written to, and copied)."""

    def close(self) -> None:
        """Close our end (the server exits) and reap it."""
        self.sock.close()
        self.process.kill()
        self.process.wait()


def prefork(modules: Iterable[str] = ()) -> PreForked | None:
    """Fork the fork server now, :data:`~.preload.PRELOAD` and what the first-party operator
    ``modules`` (those configured) import imported first (see :mod:`~.preload`); None when it
    cannot fork. Imported here rather than in the server after the fork: the server's
    allocations would then write to pages it shares with this process, which keeps the
    originals alone (supervisor USS x0.94 with the default configuration).

    Call it before any thread, event loop or file the server must not hold is started or opened.
    """
    modules = list(modules)
    names = (*PRELOAD, *operator_imports(modules))
    preload(names)
    # Built here, where the supervisor uses some of them too, instead of in the server after
    # the fork, where each allocation would write to a page the two share.
    shared = prebuild()
    # The validator of an envelope of any kind, which the supervisor builds for its status
    # requests as it starts: built after the fork, it was ≈2.3 MB of the supervisor's USS.
    shared.append(AnyEnvelopeDecoder())
    # The code of what runs as each first-party operator's __main__, compiled once here:
    # each child would compile its source again (a module such as seen or karma: ≈0.8 MB of
    # the compiler's garbage left in it). Held by the supervisor too: freed, it would be
    # written to.
    compiled = compile_mains(modules)
    shared.append(compiled)
    # The rest of the server's preparation too: run in the server after the fork, it wrote
    # to pages it shared with this process, which then became this process's alone
    # (supervisor USS +2 MB within half a second of the fork, while it did nothing). The
    # operators' logging writes to sys.stderr as it is now: here only when that is fd 2.
    configured = _stderr_is_fd2()
    if configured:
        preconfigure()
    shared += rehearse_loop()  # held: what they built stays shared
    for stream in (sys.stdout, sys.stderr):  # or what they hold is written by every child
        with contextlib.suppress(Exception):
            stream.flush()
    # Collected now, while no page is shared yet, then out of the collector's sight: a full
    # collection later (the supervisor makes one as it starts) would write to the header of
    # every object it walks, and so copy every page shared with the server and operators.
    gc.collect()
    gc.freeze()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    tie = die_with_parent()  # built here: the child's parent is this process
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        return None
    if pid == 0:  # pragma: no cover - child
        try:
            _become_server(ours, theirs, tie, names, compiled, configured=configured)
        finally:
            os._exit(1)
    theirs.close()
    return PreForked(ForkedProcess(pid), ours, shared)


def _become_server(
    ours: socket.socket,
    theirs: socket.socket,
    tie: object,
    names: tuple[str, ...],
    compiled: dict[str, Compiled],
    *,
    configured: bool,
) -> None:  # pragma: no cover - child
    ours.close()
    keep = theirs.fileno()
    os.closerange(3, keep)  # nothing of the supervisor's but stdin, stdout and stderr
    os.closerange(keep + 1, 1 << 16)
    if callable(tie):
        tie()
    os.setsid()
    gc.disable()  # as a fresh server's: no holes for the children's objects to fill
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    # What `python -c` would have put first: the current directory (operators found there).
    sys.path[0:1] = [""]
    # The streams a fresh interpreter opens on fds 1 and 2, not the supervisor's objects
    # (which a test runner, say, points elsewhere): the children write to what fds 1 and 2 are.
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - ours for the process's life
    sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
    set_title("eevee: fork server")
    if not configured:
        preconfigure()  # on the fd 2 opened above
    serve(theirs, names, compiled, prepared=True)  # all done already: frozen and shared


def _stderr_is_fd2() -> bool:
    """Whether ``sys.stderr`` writes to file descriptor 2 (a test runner may replace it)."""
    try:
        return sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False
