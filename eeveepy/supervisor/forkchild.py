"""The fork server's child: from the fork to the operator module running as ``__main__``.

Every page the child writes that it shares with the server is copied into the child (the
operator's own memory, its USS): CPython writes an object's reference count whenever it uses
it, so whatever code runs here, and every object it touches, costs the child the pages they
lie on. What runs between the fork and the operator is therefore kept short: the environment
is changed where it differs instead of emptied and filled again (≈0.3 MB less), the signals are
reset without :mod:`signal`'s enum conversions (≈0.15 MB), what it imports is imported by
the server already (:data:`~eeveepy.supervisor.preload.PRELOAD`), and an operator under a
supervisor takes over the server's structlog configuration, naming itself in it, instead of
building its own (:func:`~eeveepy.supervisor.preload.preconfigure`).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no stub: signal's C half, without the enums
import atexit
import contextlib
import gc
import importlib.machinery
import os
import sys
import traceback
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from types import CodeType
from typing import Any

import structlog

from eeveepy.logs.setup import adopt_operator_logging
from eeveepy.runtime.contract import ENV_OPERATOR_ID, ENV_SUPERVISOR
from eeveepy.runtime.title import operator_title, set_title
from eeveepy.supervisor.preload import Compiled, source_stamp
from eeveepy.supervisor.unused import allow_unused

__all__ = ["CompiledFinder", "child", "findable", "replace_environ"]

MAX_FDS = 2
"""The child's stdout and stderr, passed with each request."""

_RESET = (_signal.SIGCHLD, _signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)
"""The signals the server handles itself: the default again in the child."""


def child(
    closing: Callable[[], None],
    request: dict[str, Any],
    fds: list[int],
    tie: Callable[[], None] | None,
    compiled: Mapping[str, Compiled] | None = None,
) -> None:  # pragma: no cover - child
    """Be the child of ``request`` (never returns): ``closing`` closes what is the server's;
    ``fds`` are its stdout and stderr; ``tie`` makes it die with the server; ``compiled``
    the code the server compiled for operator modules (see
    :func:`~eeveepy.supervisor.preload.compile_mains`)."""
    code = 1
    try:
        gc.enable()
        allow_unused()  # the operator may import them itself
        os.setsid()
        if tie is not None:
            tie()
        _signal.set_wakeup_fd(-1)
        for sig in _RESET:
            _signal.signal(sig, _signal.SIG_DFL)
        closing()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        if len(fds) == MAX_FDS:
            os.dup2(fds[0], 1)
            os.dup2(fds[1], 2)
        for fd in fds:
            os.close(fd)
        replace_environ(os.environ, request.get("env") or {})
        # What a fresh interpreter would take from PYTHONPATH (an operator's own `env`).
        extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[0:0] = [p for p in extra if p not in sys.path]
        if request.get("cwd"):
            os.chdir(request["cwd"])
        # (random reseeds itself: its own after-fork handler)
        operator_id = os.environ.get(ENV_OPERATOR_ID)
        set_title(operator_title(operator_id or request["module"]))
        # The server's configuration of an operator's logging, if it is one under a
        # supervisor; anything else configures structlog (or not) as it would unforked.
        if not (operator_id and os.environ.get(ENV_SUPERVISOR)) or not adopt_operator_logging(
            operator_id
        ):
            structlog.reset_defaults()
        sys.argv = [request["module"], *request.get("argv", [])]
        if not findable(request["module"]):
            # What `python -m` says, on one line (not a traceback of the fork server's).
            print(f"{sys.executable}: No module named {request['module']}", file=sys.stderr)
            os._exit(1)
        import runpy

        main = (compiled or {}).get(request["module"])
        if main is not None:
            sys.meta_path.insert(0, CompiledFinder(main))
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        # What `python -m` does at exit: the atexit handlers (an operator's log writer flushes
        # its last lines there: "cannot start: invalid settings" would be lost), then flush.
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def replace_environ(environ: MutableMapping[str, str], env: Mapping[str, str]) -> None:
    """Make ``environ`` (``os.environ``) exactly ``env``, changing only the variables that
    differ (most of a child's environment is the server's: emptying and filling it again
    would free and allocate every variable)."""
    for name in [name for name in environ if name not in env]:
        del environ[name]
    for name, value in env.items():
        if environ.get(name) != value:
            environ[name] = value


def findable(module: str) -> bool:  # pragma: no cover - child
    """Whether ``module`` can be found (its parent packages are imported to tell)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError as exc:
        parts = module.split(".")
        parents = {".".join(parts[:i]) for i in range(1, len(parts))}
        # A parent package missing: not findable. A parent importing something missing is
        # another matter: runpy shows where.
        return exc.name not in parents


class CompiledFinder:
    """Finds the module that ``compiled`` was compiled for once, where the interpreter's path
    finder finds it, with a loader that takes the code compiled before the fork instead of
    compiling the source again (while the source is unchanged); any other module, or that
    one found elsewhere, is left to the other finders. It leaves :data:`sys.meta_path` at
    its first use."""

    def __init__(self, compiled: Compiled) -> None:
        self._compiled = compiled

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        """The spec of the compiled module, or None for any other."""
        if name != self._compiled.name:
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.origin != self._compiled.path:
            return None
        if type(spec.loader) is importlib.machinery.SourceFileLoader:
            spec.loader = _CompiledLoader(name, spec.origin, self._compiled)
        return spec


class _CompiledLoader(importlib.machinery.SourceFileLoader):
    """A source file's loader whose code is the one compiled before the fork, while the
    file's modification time and size are those it was compiled from."""

    def __init__(self, fullname: str, path: str, compiled: Compiled) -> None:
        super().__init__(fullname, path)
        self._compiled = compiled

    def get_code(self, fullname: str) -> CodeType | None:
        """The compiled code, or the source compiled again when it changed since."""
        main = self._compiled
        with contextlib.suppress(OSError):
            if fullname == main.name and source_stamp(self.path) == main.stamp:
                return main.code
        return super().get_code(fullname)
