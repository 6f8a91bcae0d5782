"""What the fork server imports before it forks, so that its children share it.

A module a forked operator imports itself is wholly its own memory; one the server imported
is shared with every child, which copies only the pages it writes to. The server imports the
operator runtime and its event loop (:data:`PRELOAD`; uvloop: minimal operator USS x0.87),
what the child's own start runs (``runpy``), and what the configured first-party operators
(``operators.*``) import: the router's, logging's and the console connector's packages, which
each of these operators held privately: ≈2 MB of its USS (same run, beside the code before:
router 14.6 → 12.8 MB, logging 13.9 → 11.8, console 13.3 → 11.3). ``eevee up`` imports them
before it forks the server (:mod:`~eeveepy.supervisor.prefork`).

An operator module is not imported itself (a package's ``__main__`` may run the operator as
it is imported, and the module runs again as ``__main__`` in the child anyway): its source
is read and the modules its top level imports are imported instead. An import that fails is
undone (the child imports again, and reports the error itself).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from types import CodeType

__all__ = [
    "FIRST_PARTY",
    "PRELOAD",
    "REHEARSALS",
    "Compiled",
    "compile_main",
    "compile_mains",
    "first_instances",
    "operator_imports",
    "prebuild",
    "preconfigure",
    "preload",
    "rehearse_envelopes",
    "rehearse_loop",
    "source_stamp",
]

PRELOAD = (
    "eeveepy.runtime.operator",
    "eeveepy.bus.ipc",
    "eeveepy.bus.client",
    "eeveepy.protocol.models",
    "uvloop",  # the operators' event loop (see eeveepy.aio.loop_factory), when installed
    "runpy",  # the child runs its module with it
    "importlib.util",  # and looks the module up with it first
    "encodings.idna",  # the supervisor's bus connection (asyncio encodes the host name)
    "concurrent.futures.thread",  # asyncio.to_thread (the supervisor's, the logging operator's)
)
"""What every Python operator imports."""

REHEARSALS = 10
"""How often what every child uses first is used before the fork (envelopes, a log event):
more than the interpreter's warm-up (8 calls) before it specialises the code that runs."""

FIRST_PARTY = "operators"
"""The package of the first-party operators, whose imports are preloaded when configured
(other operator modules might start threads as they are imported: forking then is unsafe)."""


def preload(names: Iterable[str]) -> None:
    """Import each of ``names``; one that fails is undone (its child reports the error)."""
    for name in names:
        before = set(sys.modules)
        try:
            importlib.import_module(name)
        except Exception:
            for new in set(sys.modules) - before:
                sys.modules.pop(new, None)


def operator_imports(modules: Iterable[str]) -> list[str]:
    """The modules that the first-party operator ``modules`` import at their top level (what
    runs as ``__main__``: the module, or a package's ``__main__``), in order, once each."""
    found: dict[str, None] = {}
    for module in modules:
        if module == FIRST_PARTY or module.startswith(FIRST_PARTY + "."):
            for name in _top_imports(module):
                found.setdefault(name, None)
    return list(found)


def _main_file(module: str) -> tuple[str, str, str] | None:
    """What runs as ``__main__`` for ``module`` (the module, or a package's ``__main__``):
    its module name, source file and package; None when it cannot be found. Only its parent
    packages are imported to find it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None or not spec.has_location:
        return None
    name, path, package = module, spec.origin, spec.parent or ""
    if spec.submodule_search_locations is not None:  # a package: its __main__ runs
        name, package = f"{module}.__main__", module
        path = os.path.join(os.path.dirname(path), "__main__.py")
    return name, path, package


def _top_imports(module: str) -> list[str]:
    """The absolute names ``module``'s ``__main__`` code imports at its top level; none when
    it cannot be found or read."""
    main = _main_file(module)
    if main is None:
        return []
    _, path, package = main
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return []
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            with contextlib.suppress(ImportError, ValueError):
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                names.append(base)
                # `from package import module` imports the module too (or names an object:
                # that import fails, and is undone).
                names.extend(f"{base}.{a.name}" for a in node.names if a.name != "*")
    return names


@dataclass(frozen=True)
class Compiled:
    """The code of what runs as ``__main__`` for an operator module, compiled before the
    fork (see :func:`compile_mains`)."""

    name: str
    """The module name it runs under: the module, or a package's ``__main__``."""
    path: str
    stamp: tuple[int, int]
    """The source file's modification time (ns) and size when it was compiled: the code is
    used only while they are the same (as the interpreter's own bytecode cache checks)."""
    code: CodeType


def source_stamp(path: str) -> tuple[int, int]:
    """``(mtime_ns, size)`` of ``path`` (raises OSError)."""
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


def compile_mains(modules: Iterable[str]) -> dict[str, Compiled]:
    """The code that runs as ``__main__`` for each first-party operator of ``modules``,
    compiled as the interpreter would (:meth:`importlib.abc.SourceLoader.source_to_code`),
    by configured module name. A child that runs it takes it from here instead of compiling
    its source again (the compiler's garbage stays in the child: seen and karma USS
    ≈0.8 MB each); one that cannot be read or compiled is left out (its child says why)."""
    table: dict[str, Compiled] = {}
    for module in modules:
        if module == FIRST_PARTY or module.startswith(FIRST_PARTY + "."):
            main = compile_main(module)
            if main is not None:
                table[module] = main
    return table


def compile_main(module: str) -> Compiled | None:
    """The code that runs as ``__main__`` for ``module``, compiled (only its parent packages
    are imported to find it); None when it cannot be found, read or compiled."""
    main = _main_file(module)
    if main is None:
        return None
    name, path, _ = main
    try:
        stamp = source_stamp(path)
        with open(path, "rb") as f:
            source = f.read()
        code = compile(source, path, "exec", dont_inherit=True)
    except (OSError, SyntaxError, ValueError):
        return None
    return Compiled(name, path, stamp, code)


def prebuild() -> list[object]:
    """Build what each child would build again on its first subscriptions: the validator of
    every envelope kind (pydantic makes ``Envelope[Body]`` on first use, ~15 ms each, and
    keeps it only while it is used: hence the list, to be held as long as they are shared).
    Then use the envelopes every operator uses (:func:`rehearse_envelopes`), and make the
    first instances of what every operator makes (:func:`first_instances`)."""
    try:
        from eeveepy.protocol.codec import EnvelopeDecoder
        from eeveepy.protocol.models import BODY_MODELS

        decoders: list[object] = [EnvelopeDecoder(model) for model in BODY_MODELS]
        rehearse_envelopes()
        return [*decoders, *first_instances()]
    except Exception:  # the children build them (and say what is wrong) themselves
        return []


def first_instances() -> list[object]:
    """An operator and a bus client of the kinds every child makes (neither connects, reads
    a file or the environment), to be held as long as they are shared: what the first
    instance of a class builds (CPython's table of its instances' attribute names, among
    others) is then the server's, instead of each child's (minimal operator USS x0.994)."""
    from eeveepy.bus.natsadapter import EeveeClient
    from eeveepy.runtime.operator import Operator

    return [EeveeClient(), Operator(operator_id="eevee-preload")]


def rehearse_envelopes() -> None:
    """Encode and decode, :data:`REHEARSALS` times, the envelopes of every operator's start
    and pings (``Ready``, ``Ping``, ``Pong``), as a child would: what their first uses build
    and the code the interpreter specialises is then shared with every child instead of made
    in each (minimal operator USS x0.96)."""
    from eeveepy.protocol.codec import EnvelopeDecoder, EnvelopeEncoder
    from eeveepy.protocol.models import Ping, Pong, Ready

    encoder = EnvelopeEncoder("eevee.preload")
    decoders = [EnvelopeDecoder(model) for model in (Ping, Pong, Ready)]
    bodies = (Ping(), Pong(operator="eevee.preload", state="running"), Ready(operator="", pid=0))
    for _ in range(REHEARSALS):
        for decoder, body in zip(decoders, bodies, strict=True):
            decoder.decode(encoder.encode(body)[1])


def preconfigure() -> None:
    """Configure structlog as every operator under a supervisor does (JSON lines on stderr,
    written by a thread that starts on the first line, in the child), for an operator to be
    named by each child (:func:`~eeveepy.logs.setup.adopt_operator_logging`): the children
    share the configuration instead of each building it again. Then log a few events through
    its processors into nothing, so that what a first event builds (structlog's bound logger,
    the code specialised) is built here once (minimal operator USS x0.99)."""
    try:
        import structlog

        from eeveepy.logs.setup import configure_operator_logging

        configure_operator_logging("", json_lines=True)
        log = structlog.wrap_logger(structlog.ReturnLogger())
        for n in range(REHEARSALS):
            log.info("rehearsal", n=n)
    except Exception:  # the children configure it (and say what is wrong) themselves
        return


def rehearse_loop() -> list[object]:
    """Run an event loop of the operators' kind (:func:`~eeveepy.aio.loop_factory`: uvloop
    when installed) through what every operator's start does with one (tasks, an event, a
    wait with a timeout), then close it: what a first loop builds and the code specialised are
    the server's, shared, and no loop, thread or file of it is left (minimal operator USS
    x0.985). Returns the first instances made in it (:func:`_connection_parts`), to be held
    as long as they are shared. One that fails leaves it to the children."""
    held: list[object] = []
    try:
        import asyncio

        from eeveepy.aio import loop_factory, run

        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop()
            return held  # called from a running loop (a test's): nothing to rehearse in

        async def rehearsal() -> None:
            held.extend(_connection_parts())
            for _ in range(REHEARSALS):
                event = asyncio.Event()
                waiter = asyncio.ensure_future(event.wait())
                await asyncio.sleep(0)
                event.set()
                await asyncio.wait_for(waiter, 1.0)

        run(rehearsal(), loop_factory())
    except Exception:
        return held
    return held


def _connection_parts() -> list[object]:
    """First instances (as :func:`first_instances`) of what a child makes as it connects and
    subscribes, made in a running loop and never connected: a stream reader and its protocol,
    nats-py's transport, parser, subscription and queue, an inbox and gate of eeveepy's
    (minimal operator USS x0.994)."""
    import asyncio

    from nats.aio.subscription import Subscription
    from nats.aio.transport import TcpTransport
    from nats.protocol.parser import Parser

    from eeveepy.bus.dispatch import Gate, SubscriptionStats
    from eeveepy.bus.natsadapter import EeveeClient
    from eeveepy.bus.subscription import Inbox

    reader = asyncio.StreamReader()
    client = EeveeClient()
    stats = SubscriptionStats()
    return [
        reader,
        asyncio.StreamReaderProtocol(reader),
        asyncio.Queue(),
        TcpTransport(),  # type: ignore[no-untyped-call]
        Parser(client),
        Subscription(client, 1, "eevee.preload"),
        Gate(),
        Inbox(1, stats),
    ]
