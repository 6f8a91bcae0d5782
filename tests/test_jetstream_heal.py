"""JetStream turned back on by the supervisor after nats-server disabled it.

A write error in the JetStream store (made here with ``chattr +i``: even root cannot write to an
immutable file, while chmod does not stop it) makes the embedded nats-server disable JetStream
until its configuration is reloaded. The bus watch sees it on ``/jsz``, says so once, shows it
in ``eevee ps``, and reloads the configuration with backoff until JetStream is on again; then
the chat and log streams are ensured (created again when the store lost them) and every write
kept meanwhile is stored.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import structlog
from nats.aio.client import Client as NatsClient
from structlog.testing import capture_logs
from supervisor_fixtures import System, immutable, run_async, system_factory, wait_for
from test_bus_supervision import _eventually, echo
from test_kv_health import stored_score, vote_line

from eeveepy.bus.client import barrier
from eeveepy.bus.ipc import Ipc
from eeveepy.bus.natsserver import EmbeddedNats
from eeveepy.bus.streams import chat_in_stream_name, chat_out_stream_name, ensure_chat_streams
from eeveepy.config import Config
from eeveepy.logs import stream_name
from eeveepy.protocol.subjects import Subjects
from eeveepy.supervisor.buswatch import BusWatch


def chattr(*args: str) -> None:
    subprocess.run(["chattr", *args], check=True)


async def test_the_watch_turns_jetstream_back_on_and_ensures_the_streams(tmp_path: Path) -> None:
    server = EmbeddedNats(store_dir=tmp_path / "nats")
    await server.start()
    watch = BusWatch(
        server,
        log=structlog.get_logger("test"),
        on_fatal=lambda _: None,
        jetstream_interval=0.05,
        jetstream_backoff_initial=0.1,
        jetstream_backoff_max=0.2,
    )
    nc = await nats.connect(server.url)
    store = server.store_dir / "jetstream"
    try:
        js = nc.jetstream()
        await ensure_chat_streams(js, "heal")
        watch.keep_streams(js, Config(prefix="heal"))
        kv = await js.create_key_value(bucket="kept")
        await kv.put("k", b"before")
        with capture_logs() as logs, immutable(store, recursive=True):
            watch.start()
            with immutable(server.config_path.parent):  # (as in a read-only state dir)
                await nc.publish("$KV.kept.k", b"refused")  # (no ack awaited: it fails it)
                await nc.flush()
                await _eventually(lambda: bool(watch.warnings), 5)
                (warning,) = watch.warnings
                assert warning.startswith("JetStream disabled on the embedded nats-server since")
                assert "operation not permitted" in warning  # the server's words, from its log
                assert f"free space on its disk or make {store} writable" in warning
                await _eventually(lambda: any("cannot reload" in e["event"] for e in logs), 5)
                await asyncio.sleep(0.5)  # more reloads fail, unsaid
            # The store loses the chat input stream meanwhile; its top directory stays
            # read-only, so JetStream cannot start yet (reloads keep coming, in vain).
            chattr("-R", "-i", str(store / "$G"))
            shutil.rmtree(store / "$G" / "streams" / chat_in_stream_name("heal"))
            reloads = server.config_path.stat().st_mtime_ns
            await _eventually(lambda: server.config_path.stat().st_mtime_ns != reloads, 2)
            assert watch.warnings == [warning]
            assert watch.jetstream_reenabled == 0
            chattr("-i", str(store))
            await _eventually(lambda: watch.jetstream_reenabled == 1, 5)
            assert watch.warnings == []
        await kv.put("k", b"after")
        assert (await kv.get("k")).value == b"after"
        for name in (chat_in_stream_name("heal"), chat_out_stream_name("heal")):
            assert (await js.stream_info(name)).config.subjects  # created again, or kept
        assert (await js.stream_info(stream_name("heal"))).config.subjects == ["heal.log.>"]
    finally:
        await watch.stop()
        await nc.close()
        await server.stop()
    said = [(e["log_level"], e["event"]) for e in logs if "JetStream" in e["event"]]
    assert len(said) == 3, said  # once each: off, reloads failing, back
    assert said[0][0] == "error"
    assert said[0][1].startswith("JetStream is disabled on the embedded nats-server (")
    assert "free space on its disk or make" in said[0][1]
    assert said[1][0] == "warning"
    assert said[1][1].startswith("cannot reload the nats-server configuration")
    assert "Operation not permitted" in logs[[e["event"] for e in logs].index(said[1][1])]["error"]
    assert said[2] == ("warning", "JetStream is back on the embedded nats-server")
    back = next(e for e in logs if e["event"] == said[2][1])
    assert back["reloads"] >= 5


# -- under `eevee up` -----------------------------------------------------------------------------

OPERATORS: dict[str, dict[str, Any]] = {
    "router": {"module": "operators.router", "settings": {"prefixes": ["!"]}},
    "echo": {"module": "operators.echo"},
    "karma": {"module": "operators.karma"},
}


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    with system_factory(tmp_path) as make:
        yield make()


async def vote(state: dict[str, Any], text: str) -> None:
    """Say ``text`` in #ops, as a connector of irc/libera (with the CLI's credentials)."""
    nc = await connect(state)
    try:
        ipc = Ipc(Subjects(state["prefix"]), "irc.libera")
        await ipc.attach(nc)
        await ipc.publish(ipc.subjects.chat_in("irc", "libera", "#ops"), vote_line(text))
        await barrier(nc)
    finally:
        await nc.close()


async def score(state: dict[str, Any], thing: str) -> int | None:
    """The score karma's bucket holds for ``thing``, read past karma."""
    nc = await connect(state)
    try:
        return await stored_score(nc, "karma", thing, state["prefix"])
    finally:
        await nc.close()


async def chat_stored(state: dict[str, Any]) -> list[int]:
    """How many messages the chat input and output streams have stored so far."""
    nc = await connect(state)
    try:
        names = (chat_in_stream_name(state["prefix"]), chat_out_stream_name(state["prefix"]))
        return [(await nc.jetstream().stream_info(name)).state.last_seq for name in names]
    finally:
        await nc.close()


def said(system: System, op_id: str, event: str) -> list[str]:
    """The lines of ``op_id``'s log (through the supervisor's) with ``event``."""
    return [ln for ln in system.log().splitlines() if f"[{op_id}]" in ln and event in ln]


async def connect(state: dict[str, Any]) -> NatsClient:
    return await nats.connect(
        state["url"], user=state["user"], password=state["password"], allow_reconnect=False
    )


def test_the_supervisor_turns_jetstream_back_on_by_itself(system: System) -> None:
    system.write(OPERATORS).up(*OPERATORS)
    wait_for(lambda: echo(system, "before"), 20, what="echo registered", interval=0.2)
    state = json.loads(system.state_file.read_text())
    run_async(vote(state, "python++"))
    wait_for(lambda: run_async(score(state, "python")), 10, what="the first vote stored")
    karma = system.op("karma")

    with immutable(system.state_dir / "nats" / "jetstream", recursive=True):
        run_async(vote(state, "python++ rust++"))  # the store fails the write
        ps = wait_for(
            lambda: (ps := system.cli("ps")).stderr and ps, 10, what="a warning from eevee ps"
        )
        assert ps.returncode == 0, ps.stderr
        assert "eevee: warning: JetStream disabled on the embedded nats-server" in ps.stderr
        assert "/nats/jetstream writable" in ps.stderr
        run_async(vote(state, "python++"))  # kept by karma too

    # No SIGHUP from here: the supervisor re-enables JetStream; karma's retries then land.
    status = system.wait_op(
        "karma",
        lambda s: s["health"] == "ok" and said(system, "karma", "writes stored again"),
        what="karma's writes stored",
    )
    assert (status["state"], status["pid"], status["restarts"]) == ("RUNNING", karma["pid"], 0)
    (failed,) = said(system, "karma", "unhealthy")  # its write failed, was kept and retried
    assert "[error" in failed
    assert "not stored yet, retrying" in failed
    assert run_async(score(state, "python")) == 3
    assert run_async(score(state, "rust")) == 1
    ps = system.cli("ps")
    assert "warning" not in ps.stderr, ps.stderr
    assert "DEGRADED" not in ps.stdout
    lines, replies = run_async(chat_stored(state))
    assert echo(system, "after")
    lines_now, replies_now = run_async(chat_stored(state))
    assert lines_now > lines  # the chat line was stored
    assert replies_now > replies  # and so was the reply

    log = system.log()
    assert log.count("JetStream is disabled on the embedded nats-server") == 1, log[-3000:]
    assert "[error" in log.split("JetStream is disabled on")[0].rsplit("\n", 1)[-1]
    assert log.count("JetStream is back on the embedded nats-server") == 1, log[-3000:]
    history = system.cli("logs", "--grep", "JetStream is back").stdout
    assert "JetStream is back on the embedded nats-server" in history  # stored again
