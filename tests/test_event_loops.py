"""Operators on uvloop where it is installed, on asyncio's own loop otherwise or when asked
(``EEVEE_LOOP``): the choice, and a command's round trip through real router and echo
processes on each loop."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from eeveepy.aio import loop_factory, running_loop
from eeveepy.errors import OperatorError
from eeveepy.protocol.models import ChatMessage, ChatUser, OutgoingMessage
from tests.chat_system import ChatSystem

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
needs_uvloop = pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop is not installed")


def test_asyncio_is_asked_by_name() -> None:
    assert loop_factory("asyncio") is None


@needs_uvloop
def test_auto_and_uvloop_pick_uvloop_where_it_is_installed() -> None:
    import uvloop

    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("") is uvloop.new_event_loop  # unset: auto
    assert loop_factory("uvloop") is uvloop.new_event_loop


async def test_the_known_loop_is_taken_only_while_it_runs() -> None:
    loop = asyncio.get_running_loop()
    assert running_loop(None) is loop
    assert running_loop(loop) is loop
    other = asyncio.new_event_loop()
    try:
        assert running_loop(other) is loop, "a loop that does not run is not the running one"
    finally:
        other.close()


def test_an_unknown_loop_is_refused_with_the_choices() -> None:
    with pytest.raises(OperatorError, match="auto, uvloop, asyncio"):
        loop_factory("trio")


def _loaded(pid: int, library: str) -> bool:
    return library in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize(
    "loop", [pytest.param("uvloop", marks=needs_uvloop), pytest.param("asyncio")]
)
async def test_a_command_round_trip_on_each_loop(nats_url: str, tmp_path: Path, loop: str) -> None:
    system = ChatSystem(nats_url, tmp_path, platform="probe", env={"EEVEE_LOOP": loop})
    await system.start()
    try:
        await system.commands()
        echo = next(p for p in system.procs if p.id == "echo")
        assert echo.pid is not None
        assert _loaded(echo.pid, "uvloop") is (loop == "uvloop")
        answers = await system.collect("chat.out.probe.loops", OutgoingMessage)
        msg = ChatMessage(
            platform="probe",
            network="loops",
            room="#r",
            user=ChatUser(id="u", name="u"),
            text=f"!echo on {loop}",
        )
        await system.io.publish(system.subjects.chat_in("probe", "loops", "#r"), msg)
        out = await asyncio.wait_for(answers.get(), 10)
        assert out.body.text == f"on {loop}"
    finally:
        await system.close()
