"""Optional integrations of eeveepy's dependencies that the supervisor and the fork server
never use, kept out of them: nats-py's websocket transport (aiohttp, ~8 MB a process) and
structlog's Twisted support (~4 MB). Both are imported only because their package happens to
be installed (the Matrix connector needs aiohttp; the Matrix homeserver of the tests brings
Twisted), through a ``try: import ... except ImportError`` that :func:`skip_unused` makes take
its ``except`` branch. Bus URLs are ``nats://`` or ``tls://``: no websocket is ever opened.

A forked operator may need them itself (the Matrix connector imports aiohttp): the fork
server's child calls :func:`allow_unused` before it runs the operator.
"""

from __future__ import annotations

import sys

__all__ = ["UNUSED", "allow_unused", "skip_unused"]

UNUSED = ("aiohttp", "twisted")
"""Packages imported only by integrations eeveepy does not use."""


def skip_unused() -> None:
    """From now on, importing one of :data:`UNUSED` fails in this process (unless it is
    imported already); call it before anything imports nats-py or structlog."""
    for name in UNUSED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "not importable"


def allow_unused() -> None:
    """Undo :func:`skip_unused`: they can be imported again."""
    for name in UNUSED:
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]
