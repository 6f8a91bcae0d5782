"""What the fork server preloads for its children, and the environment a child starts with."""

from __future__ import annotations

import asyncio
import runpy
import sys
from pathlib import Path

import pytest

from eeveepy.protocol.models import BODY_MODELS
from eeveepy.supervisor.forkchild import CompiledFinder, replace_environ
from eeveepy.supervisor.forkserver import ForkServer
from eeveepy.supervisor.prefork import prefork
from eeveepy.supervisor.preload import (
    Compiled,
    compile_mains,
    operator_imports,
    prebuild,
    preload,
    rehearse_envelopes,
    rehearse_loop,
    source_stamp,
)


def test_an_operators_imports_are_read_from_the_code_that_runs_as_main() -> None:
    """A package's ``__main__`` (run, not imported: the IRC connector's starts the operator
    as it is imported), a single module's top level; relative imports resolved; only the
    first-party operators, and nothing for a module that is not there."""
    before = set(sys.modules)
    names = operator_imports(
        ["operators.router", "operators.irc", "operators.echo", "operators.nothere", "json"]
    )
    assert not [m for m in set(sys.modules) - before if m.startswith("operators.")]
    assert "operators.router.service" in names
    assert "operators.irc.platform" in names
    assert {"pydantic", "eeveepy"} <= set(names)
    assert len(names) == len(set(names))
    assert not [n for n in names if n.startswith(("operators.nothere", "json"))]


def test_an_import_that_fails_is_undone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its child imports it again and reports the error itself: nothing half-imported stays
    (a module it imported before failing included)."""
    pkg = tmp_path / "pl_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text("VALUE = 1\n")
    (pkg / "bad.py").write_text("from pl_pkg import good\nraise RuntimeError('broken')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        preload(["pl_pkg.bad", "pl_pkg.good.VALUE", "pl_pkg.good"])
        assert [m for m in sys.modules if m.startswith("pl_pkg")] == ["pl_pkg", "pl_pkg.good"]
    finally:
        for name in [m for m in sys.modules if m.startswith("pl_pkg")]:
            del sys.modules[name]


def test_the_environment_becomes_exactly_the_one_given() -> None:
    environ = {"SAME": "1", "CHANGED": "old", "GONE": "x"}
    wanted = {"SAME": "1", "CHANGED": "new", "NEW": "é"}
    replace_environ(environ, wanted)
    assert environ == wanted
    replace_environ(environ, {})
    assert environ == {}


async def test_a_pre_forked_server_holds_the_configured_operators_imports(
    tmp_path: Path,
) -> None:
    """The router's package and the IRC connector's are imported before the fork (shared with
    the server and the children instead of imported by each), and the connector whose
    ``__main__`` starts it as it is imported did not start; so are the event loop (uvloop, a
    dependency) and runpy, which every child uses."""
    # (An earlier test of the session may have imported the logging operator already: then
    # the child has it too, and only what was not configured and not imported must be absent.)
    unconfigured = "operators.logging.service" in sys.modules
    forked = prefork(["operators.router", "operators.irc"])
    assert forked is not None
    assert {"operators.router.service", "operators.irc.platform"} <= set(sys.modules)
    server = ForkServer()
    await server.start(forked=forked)
    try:
        (tmp_path / "fc_probe.py").write_text(
            "import sys\n"
            "print(*(m in sys.modules for m in ('operators.router.service',"
            " 'operators.irc.platform', 'operators.logging.service', 'uvloop', 'runpy')))\n"
        )
        child = await server.spawn("fc_probe", [], {}, cwd=str(tmp_path))
        assert child.stdout is not None
        out = await asyncio.wait_for(child.stdout.read(), 10)
        assert await asyncio.wait_for(child.wait(), 10) == 0
        assert out.decode() == f"True True {unconfigured} True True\n"
        assert server.running
    finally:
        await server.stop()


def test_the_envelopes_every_operator_uses_are_rehearsed_before_the_fork() -> None:
    # prebuild() keeps going when the rehearsal fails (the children then build what it would
    # have): here it must run through, or it would silently share nothing.
    rehearse_envelopes()
    built = prebuild()
    decoders = built[: len(BODY_MODELS)]
    assert [d.model for d in decoders] == list(BODY_MODELS)  # type: ignore[attr-defined]
    # and the first instances of what every operator makes
    assert [type(x).__name__ for x in built[len(BODY_MODELS) :]] == ["EeveeClient", "Operator"]


def test_the_loop_rehearsal_runs_through_holding_first_instances_of_a_connection() -> None:
    # Like prebuild(), it keeps going when something fails: here it must run through.
    held = rehearse_loop()
    assert [type(x).__name__ for x in held] == [
        "StreamReader",
        "StreamReaderProtocol",
        "Queue",
        "TcpTransport",
        "Parser",
        "Subscription",
        "Gate",
        "Inbox",
    ]


def test_an_operators_main_is_compiled_before_the_fork_as_the_interpreter_would() -> None:
    table = compile_mains(["operators.echo", "operators.router", "tests.operators.null_operator"])
    assert sorted(table) == ["operators.echo", "operators.router"]  # first-party ones only
    router = table["operators.router"]
    assert router.name == "operators.router.__main__"
    assert router.path.endswith("operators/router/__main__.py")
    with open(router.path, "rb") as f:
        source = f.read()
    assert router.code.co_code == compile(source, router.path, "exec", dont_inherit=True).co_code
    assert router.stamp == source_stamp(router.path)


def test_a_child_runs_the_code_compiled_before_the_fork_while_the_source_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "cf_probe.py"
    module.write_text("WHERE = 'source'\n")
    path = str(module)
    code = compile("WHERE = 'compiled'\n", path, "exec")
    compiled = Compiled("cf_probe", path, source_stamp(path), code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    sys.meta_path.insert(0, CompiledFinder(compiled))
    assert runpy.run_module("cf_probe")["WHERE"] == "compiled"
    assert not [f for f in sys.meta_path if isinstance(f, CompiledFinder)]  # once only
    # Found elsewhere than where it was compiled from: the file found runs.
    sys.meta_path.insert(0, CompiledFinder(Compiled("cf_probe", "/elsewhere.py", (0, 0), code)))
    assert runpy.run_module("cf_probe")["WHERE"] == "source"
    # Changed since it was compiled: the new source runs.
    module.write_text("WHERE = 'changed source'\n")
    sys.meta_path.insert(0, CompiledFinder(compiled))
    assert runpy.run_module("cf_probe")["WHERE"] == "changed source"
