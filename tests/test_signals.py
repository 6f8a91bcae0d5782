"""An operator's signal handlers: installed for one serve, and what was there before put back."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import structlog

from eeveepy.runtime.signals import capture_signals


def test_the_handlers_of_before_are_put_back_after_the_serve() -> None:
    calls: list[str] = []

    def before(signum: int, frame: Any) -> None:
        calls.append("before")

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        with capture_signals(
            loop,
            stop=lambda: calls.append("stop"),
            reload=lambda: calls.append("reload"),
            log=structlog.get_logger("test"),
        ):
            signal.raise_signal(signal.SIGHUP)
            await asyncio.sleep(0.05)  # the loop runs the handler
        assert signal.getsignal(signal.SIGHUP) is before
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

    previous = signal.signal(signal.SIGHUP, before)
    try:
        asyncio.run(serve())
        signal.raise_signal(signal.SIGHUP)
        assert calls == ["reload", "before"]
    finally:
        signal.signal(signal.SIGHUP, previous)
