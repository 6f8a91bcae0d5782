"""What the fork server prepares at the first request for a module outside ``operators``: the
parent packages that run no code imported, the module's code compiled; nothing else."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from eeveepy.supervisor.forkserver import ForkServer
from eeveepy.supervisor.prepare import Prepared, quiet_parents, runs_nothing

MAIN = "import sys\nprint(__name__, __spec__.name, sys.modules[__spec__.parent].__name__)\n"


@pytest.fixture
def mods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path holding: ``nsp`` (a namespace package), ``nsp.doc`` (an
    ``__init__`` of a docstring alone), ``nsp.doc.loud`` (one that runs code), modules in
    each. The packages are taken out of sys.modules again afterwards."""
    root = tmp_path / "mods"
    doc = root / "nsp" / "doc"
    loud = doc / "loud"
    loud.mkdir(parents=True)
    (doc / "__init__.py").write_text('"""Nothing but a docstring."""\n', encoding="utf-8")
    (loud / "__init__.py").write_text("import sys\nsys.loud_ran = True\n", encoding="utf-8")
    (doc / "op.py").write_text(MAIN, encoding="utf-8")
    (loud / "op.py").write_text(MAIN, encoding="utf-8")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.chdir(tmp_path)
    try:
        yield root
    finally:
        for name in [n for n in sys.modules if n == "nsp" or n.startswith("nsp.")]:
            del sys.modules[name]
        if hasattr(sys, "loud_ran"):
            del sys.loud_ran


def test_only_namespace_and_docstring_packages_run_nothing(mods: Path) -> None:
    namespace = importlib.util.find_spec("nsp")
    assert namespace is not None
    assert runs_nothing(namespace)
    doc = importlib.util.find_spec("nsp.doc")
    assert doc is not None
    assert runs_nothing(doc)
    loud = importlib.util.find_spec("nsp.doc.loud")
    assert loud is not None
    assert not runs_nothing(loud)
    module = importlib.util.find_spec("nsp.doc.op")
    assert module is not None
    assert not runs_nothing(module)


def test_parents_are_imported_up_to_the_first_that_runs_code(mods: Path) -> None:
    assert quiet_parents("nsp.doc.op")
    assert "nsp.doc" in sys.modules
    assert "nsp.doc.op" not in sys.modules
    assert not quiet_parents("nsp.doc.loud.op")
    assert "nsp.doc.loud" not in sys.modules
    assert not hasattr(sys, "loud_ran")


def test_the_first_request_compiles_a_module_under_quiet_parents(mods: Path) -> None:
    prepared = Prepared()
    prepared.first_spawn({"module": "nsp.doc.op", "env": {}, "cwd": os.getcwd()})
    main = prepared.compiled["nsp.doc.op"]
    assert main.name == "nsp.doc.op"
    assert main.path == str(mods / "nsp" / "doc" / "op.py")
    prepared.first_spawn({"module": "nsp.doc.loud.op", "env": {}})
    assert "nsp.doc.loud.op" not in prepared.compiled
    assert not hasattr(sys, "loud_ran")


@pytest.mark.parametrize(
    "request_",
    [
        {"module": "nsp.doc.op", "env": {"PYTHONPATH": "/somewhere/else"}},
        {"module": "nsp.doc.op", "env": {}, "cwd": "/"},
        {"module": "operators.echo", "env": {}},
    ],
    ids=["another PYTHONPATH", "another directory", "first-party"],
)
def test_a_child_that_would_search_elsewhere_or_a_first_party_module_is_left_alone(
    mods: Path, request_: dict[str, object]
) -> None:
    prepared = Prepared()
    prepared.first_spawn(request_)
    assert prepared.compiled == {}
    assert "nsp" not in sys.modules


async def test_children_of_a_prepared_module_run_it_and_its_changes(
    mods: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(mods), *sys.path]))
    server = ForkServer()
    await server.start()
    try:
        outputs = []
        for _ in range(2):
            child = await server.spawn("nsp.doc.op", [], {}, cwd=os.getcwd())
            assert child.stdout is not None
            out = await asyncio.wait_for(child.stdout.read(), 10)
            assert await asyncio.wait_for(child.wait(), 10) == 0
            outputs.append(out.decode())
            # Changed after the first child (another size): the next runs the new source.
            (mods / "nsp" / "doc" / "op.py").write_text(
                MAIN.replace("print(", "print('changed', "), encoding="utf-8"
            )
        assert outputs == ["__main__ nsp.doc.op nsp.doc\n", "changed __main__ nsp.doc.op nsp.doc\n"]
    finally:
        await server.stop()
