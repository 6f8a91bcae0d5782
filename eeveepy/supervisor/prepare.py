"""What the fork server prepares for an operator module the first time it forks a child for it.

The configured first-party operators (``operators.*``) have their imports preloaded and their
``__main__`` compiled before the server forks at all (:mod:`~eeveepy.supervisor.preload`).
Any other module is left to its children: importing it in the server could start a thread as
it is imported (forking then is unsafe). Its *parent packages* are another matter when they
run no code as they are imported: a namespace package (a directory without ``__init__.py``)
or a package whose ``__init__.py`` holds nothing but a docstring. Each child would import
them again (``tests``, ``tests.operators`` of the benchmark's minimal operator: the import
system's first run in a child writes to pages of its whole machinery) and compile or unmarshal
its module's code again. So at the first request for a module, the server imports those
parents itself and, when they are all such packages, compiles the module's ``__main__`` code
as for a first-party operator: its later children share both (minimal operator USS x0.98).

Only when the child would find the same thing: a request whose ``PYTHONPATH`` adds a directory
or whose working directory is another than the server's is left alone.
"""

from __future__ import annotations

import ast
import gc
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Mapping
from typing import Any

from eeveepy.supervisor.preload import FIRST_PARTY, Compiled, compile_main

__all__ = ["Prepared", "quiet_parents", "runs_nothing"]


class Prepared:
    """What the server prepared, by module: the code compiled for each (see
    :func:`~eeveepy.supervisor.preload.compile_mains`), first-party ones given at start."""

    def __init__(self, compiled: Mapping[str, Compiled] | None = None) -> None:
        self.compiled: dict[str, Compiled] = dict(compiled or {})
        self._seen: set[str] = set(self.compiled)

    def first_spawn(self, request: Mapping[str, Any]) -> None:
        """Prepare the module of ``request`` if it is the first request for it (see the
        module's docstring); whatever fails is left to the child, which reports it."""
        module = request.get("module")
        if not isinstance(module, str) or module in self._seen:
            return
        self._seen.add(module)
        if module == FIRST_PARTY or module.startswith(FIRST_PARTY + "."):
            return  # prepared before the fork, when configured; never imported here otherwise
        if not _finds_alike(request):
            return
        try:
            if quiet_parents(module):
                main = compile_main(module)
                if main is not None:
                    self.compiled[module] = main
        except Exception:  # the child finds the module (or says why) itself
            return
        finally:
            gc.freeze()  # out of the children's collector's sight, as what was preloaded


def _finds_alike(request: Mapping[str, Any]) -> bool:
    """Whether the child of ``request`` searches for modules where the server does."""
    cwd = request.get("cwd")
    if cwd and os.path.realpath(cwd) != os.path.realpath(os.getcwd()):
        return False
    env = request.get("env") or {}
    extra = [p for p in str(env.get("PYTHONPATH", "")).split(os.pathsep) if p]
    return all(p in sys.path for p in extra)


def quiet_parents(module: str) -> bool:
    """Import the parent packages of ``module``, outermost first, while they run no code as
    they are imported (:func:`runs_nothing`); True when every parent is imported."""
    parts = module.split(".")
    for i in range(1, len(parts)):
        name = ".".join(parts[:i])
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or not runs_nothing(spec):
            return False
        importlib.import_module(name)
    return True


def runs_nothing(spec: importlib.machinery.ModuleSpec) -> bool:
    """Whether the package of ``spec`` runs no code as it is imported: a namespace package,
    or one whose ``__init__.py`` is empty or a docstring alone."""
    if spec.submodule_search_locations is None:
        return False
    if spec.origin is None or isinstance(spec.loader, importlib.machinery.NamespaceLoader):
        return True
    if type(spec.loader) is not importlib.machinery.SourceFileLoader:
        return False
    try:
        with open(spec.origin, encoding="utf-8") as f:
            body = ast.parse(f.read(), spec.origin).body
    except (OSError, SyntaxError, ValueError):
        return False
    return not body or (
        len(body) == 1
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    )
