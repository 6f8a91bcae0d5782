"""Benchmarks that need a chat server: run them when it is there, say why not otherwise."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tests.irc_servers import ServerUnavailable, find_binary

__all__ = ["run_if_installed"]

T = TypeVar("T")


def run_if_installed(binary: str, run: Callable[[], T], install: str) -> T | None:
    """``run()``, or None (and a line saying why) when ``binary`` is not installed (``install``
    says how to get it) or its server cannot start."""
    if find_binary(binary) is None:
        print(f"  skipped: {binary} is not installed ({install})")
        return None
    try:
        return run()
    except ServerUnavailable as e:
        print(f"  skipped: {e}")
        return None
