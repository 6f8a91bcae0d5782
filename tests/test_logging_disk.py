"""The logging operator keeps disk use bounded as a whole, whatever ids the bus makes up.

Real processes against the session's nats-server; the test plays the supervisor (see
``tests/logging_fixtures.py``), or two of them.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pydantic
import pytest

from eeveepy.bus.client import BusConfig, barrier, connect
from eeveepy.bus.ipc import Ipc
from eeveepy.protocol.codec import EnvelopeEncoder
from eeveepy.protocol.models import Envelope, LogLevel, LogRecord, SupervisorStatus

pytest.register_assert_rewrite("tests.logging_fixtures")  # imported here, before pytest_plugins

from operators.logging import UNKNOWN_NAME, KnownIds, LogFiles, LoggingSettings  # noqa: E402
from operators.logging.known import ASK_AGAIN  # noqa: E402
from tests.logging_fixtures import (  # noqa: E402
    Bus,
    Child,
    caught_up,
    env_id,
    ids,
    lines,
    logging_process,
)

pytest_plugins = ["tests.logging_fixtures"]


def events(child: Child, event: str) -> list[dict[str, Any]]:
    """The operator's own log lines (on its stderr) of ``event``."""
    found = []
    for raw in child.stderr.splitlines():
        with_event = json.loads(raw) if raw.startswith(b"{") else {}
        if with_event.get("event") == event:
            found.append(with_event)
    return found


def chain(logs: Path, name: str) -> list[str]:
    """The envelope ids in ``name``'s files, oldest first (``.N`` ... ``.1``, then current)."""
    rotated = sorted(
        (int(p.name.rsplit(".", 1)[1]) for p in logs.glob(f"{name}.jsonl.*")), reverse=True
    )
    found: list[str] = []
    for n in rotated:
        found += ids(logs / f"{name}.jsonl.{n}")
    return found + ids(logs / f"{name}.jsonl")


def disk_use(directory: Path) -> int:
    """Bytes in the directory's files, each file counted once even if renamed while read."""
    sizes: dict[int, int] = {}
    for entry in os.scandir(directory):
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        sizes[st.st_ino] = st.st_size
    return sum(sizes.values())


async def test_made_up_ids_share_one_capped_unknown_bucket(bus: Bus) -> None:
    await bus.add_stream()
    bus.operators = {"echo"}
    logs = bus.tmp / "logs"
    max_bytes, cap = 20_000, 100_000
    settings = {"directory": str(logs), "max_bytes": max_bytes, "max_total_bytes": cap}
    async with logging_process(bus, bus.env(settings)) as child:
        asks, started = bus.asks, time.monotonic()
        echo: list[str] = []
        for i in range(3000):
            await bus.log(f"made-up-{i}", f"event {i}")
            if i % 500 == 0:
                echo.append(env_id(await bus.log("echo", f"still here {i}")))
        newest = env_id(await bus.log("made-up-last", "the newest"))
        await caught_up(bus, 3001 + len(echo), timeout=30)
        elapsed = time.monotonic() - started

        # One shared bucket (current and one rotated file) instead of 3,001 files.
        assert sorted(p.name for p in logs.iterdir()) == [
            "_unknown.jsonl",
            "_unknown.jsonl.1",
            "echo.jsonl",
        ]
        assert ids(logs / "echo.jsonl") == echo  # the configured id still has its file
        assert disk_use(logs) <= cap
        assert all(p.stat().st_size <= max_bytes for p in logs.iterdir())
        last = json.loads(lines(logs / f"{UNKNOWN_NAME}.jsonl")[-1])
        assert last["id"] == newest
        assert last["body"]["operator"] == "made-up-last"  # the claimed id is kept

        # Neither warnings nor questions to the supervisor grow with the events.
        warned = events(child, "log events not filed normally")
        assert len(warned) == 1, warned
        assert warned[0]["unknown"] >= 1
        assert len(warned[0]["unknown_ids"]) <= 5
        assert bus.asks - asks <= 2 + elapsed / ASK_AGAIN
        assert await child.stop() == 0
    (closed,) = events(child, "log files closed")
    assert closed["unknown"] == 3001
    assert closed["written"] == len(echo)


async def test_total_cap_prunes_the_oldest_files_first_and_keeps_the_newest(bus: Bus) -> None:
    await bus.add_stream()
    bus.operators = {"a", "b", "c"}
    logs = bus.tmp / "logs"
    logs.mkdir()
    stale = logs / "gone.jsonl.1"  # from earlier days: the oldest rotated file of all
    stale.write_bytes(b"{}\n" * 2000)
    day_ago = time.time() - 86400
    os.utime(stale, (day_ago, day_ago))
    max_bytes, cap = 3000, 30_000
    settings = {
        "directory": str(logs),
        "max_bytes": max_bytes,
        "backups": 50,  # the total cap, not the rotation, is what limits here
        "max_total_bytes": cap,
    }
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, disk_use(logs))
            await asyncio.sleep(0.002)

    async with logging_process(bus, bus.env(settings)) as child:
        watcher = asyncio.ensure_future(watch())
        sent: dict[str, list[str]] = {name: [] for name in ("a", "b", "c")}
        for i in range(300):
            for name, got in sent.items():
                got.append(env_id(await bus.log(name, f"event {i:04d} " + "x" * 100)))
        await caught_up(bus, 900)
        watcher.cancel()

        assert not stale.exists()
        assert cap - 2 * max_bytes <= disk_use(logs) <= cap
        assert peak <= cap + max_bytes  # never past the cap by more than one rotation step
        for name, got in sent.items():
            kept = chain(logs, name)
            assert len(kept) < len(got)
            assert kept == got[-len(kept) :]  # the newest, in order, nothing missing between
        pruned = events(child, "log files deleted to stay under max_total_bytes")
        assert len(pruned) == 1, pruned  # once, however many files went
        assert pruned[0]["max_total_bytes"] == cap
        assert await child.stop() == 0


async def test_ids_stay_known_while_no_supervisor_answers_and_across_restarts(
    bus: Bus, nats_url: str
) -> None:
    await bus.add_stream()
    bus.operators = {"one"}
    other = Ipc(bus.subjects, "supervisor")  # a second supervisor on the bus, other ids
    other_nc = await connect(BusConfig(url=nats_url), name="test-other")
    await other.attach(other_nc)

    async def other_status(env: Envelope[dict[str, Any]]) -> SupervisorStatus:
        return bus.status("other", {"two"})

    sub = await other.subscribe(bus.subjects.supervisor("status"), other_status)
    await barrier(other.nc)
    logs = bus.tmp / "logs"
    env = bus.env({"directory": str(logs), "operators": ["three"]})
    names = ("one", "two", "three")
    sent: dict[str, list[str]] = {name: [] for name in names}
    try:
        async with logging_process(bus, env) as child:
            for name in names:
                sent[name].append(env_id(await bus.log(name, "first")))
            await caught_up(bus, 3)
            assert {name: ids(logs / f"{name}.jsonl") for name in names} == sent

            # Both supervisors become unreachable: asked again, nobody answers.
            bus.operators = set()
            await sub.unsubscribe()
            asks = bus.asks
            await asyncio.sleep(ASK_AGAIN)
            made_up = env_id(await bus.log("made-up", "nobody configured me"))
            for name in names:
                sent[name].append(env_id(await bus.log(name, "second")))
            await caught_up(bus, 7)
            assert bus.asks > asks
            assert {name: ids(logs / f"{name}.jsonl") for name in names} == sent
            assert ids(logs / f"{UNKNOWN_NAME}.jsonl") == [made_up]
            assert await child.stop() == 0

        # A restart with no supervisor around still knows them (kept in the data dir).
        async with logging_process(bus, env) as child:
            sent["two"].append(env_id(await bus.log("two", "third")))
            await caught_up(bus, 8)
            assert ids(logs / "two.jsonl") == sent["two"]

            # An operator added since (a reload) is asked about on its first event.
            bus.operators = {"late"}
            await asyncio.sleep(ASK_AGAIN)
            late = env_id(await bus.log("late", "hello"))
            await caught_up(bus, 9)
            assert ids(logs / "late.jsonl") == [late]
            assert await child.stop() == 0
    finally:
        await other.detach()
        await other_nc.close()


# -- the pieces, in process --------------------------------------------------------------------


def test_known_ids_forget_only_what_answering_supervisors_stopped_listing() -> None:
    known = KnownIds({"supervisor"}, forget_after=100.0)
    bus = Bus("nats://unused", Path())
    assert known.update([bus.status("a", {"x", "y"}), bus.status("b", {"z"})], now=1000.0)
    assert known.current == {"supervisor", "x", "y", "z"}
    assert not known.update([], now=5000.0)  # nobody answers, for long: nothing forgotten
    assert "x" in known
    assert known.update([bus.status("a", {"x"})], now=5001.0)  # y and z: not listed for long
    assert known.current == {"supervisor", "x"}
    assert not known.update([bus.status("a", {"Bad Id", "x"})], now=5002.0)


def test_known_ids_survive_a_restart_and_a_broken_file(tmp_path: Path) -> None:
    first = KnownIds(set(), forget_after=100.0)
    first.update([Bus("nats://unused", tmp_path).status("a", {"x"})], now=time.time())
    path = tmp_path / "known-ids.json"
    KnownIds.save(path, first.snapshot())
    second = KnownIds({"supervisor"}, forget_after=100.0)
    assert second.load(path) is None
    assert second.current == {"supervisor", "x"}
    path.write_text('{"ids": ["not", "a", "map"]}')
    third = KnownIds({"supervisor"}, forget_after=100.0)
    problem = third.load(path)
    assert problem is not None
    assert str(path) in problem
    assert third.current == {"supervisor"}


def test_ids_beyond_max_ids_go_to_the_unknown_bucket(tmp_path: Path) -> None:
    encoder = EnvelopeEncoder("test")
    (tmp_path / "stale.jsonl").write_text("{}\n")  # an id no longer known: does not count
    files = LogFiles(
        tmp_path, receiver="logging", max_bytes=10_000, backups=1, max_age_days=1.0,
        max_total_bytes=100_000, max_ids=2,
    )  # fmt: skip
    items = []
    for name in ("a", "b", "c", "a"):
        record = LogRecord(operator=name, level=LogLevel.INFO, event="hi")
        items.append((f"eevee.log.info.{name}", encoder.encode(record)[1]))
    result = files.write_batch(items, known={"a", "b", "c"})
    files.close()
    assert (result.written, result.over_ids, result.unknown_ids) == (3, 1, {"c"})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["_unknown.jsonl", "a.jsonl", "b.jsonl", "stale.jsonl"]


def test_settings_refuse_a_cap_smaller_than_two_files_and_bad_ids() -> None:
    with pytest.raises(pydantic.ValidationError, match="twice"):
        LoggingSettings(max_bytes=1000, max_total_bytes=1999)
    with pytest.raises(pydantic.ValidationError, match="operator id"):
        LoggingSettings(operators=("echo", "Not An Id"))
    assert LoggingSettings(max_bytes=1000, max_total_bytes=2000).operators == ()
