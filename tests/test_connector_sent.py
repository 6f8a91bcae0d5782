"""The ids of sent ``chat.out`` messages a connector keeps across restarts (SentLog)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eeveepy.connector.sent import KEEP, SentLog

pytest.register_assert_rewrite("tests.ipc_fixtures")  # imported here, before its tests

from tests.ipc_fixtures import RecordingLogger  # noqa: E402


def test_a_new_process_knows_what_the_last_one_sent(tmp_path: Path) -> None:
    path = tmp_path / "data" / "chat-out-sent"
    first = SentLog(path)
    first.open()
    first.add("a~cmd.echo~0")
    first.add("b~cmd.echo~0")
    # no close(): a process killed with SIGKILL closes nothing
    again = SentLog(path)
    again.open()
    assert "a~cmd.echo~0" in again
    assert "b~cmd.echo~0" in again
    assert "c~cmd.echo~0" not in again


def test_the_file_keeps_the_last_ids_only(tmp_path: Path) -> None:
    path = tmp_path / "sent"
    log = SentLog(path)
    log.open()
    for n in range(3 * KEEP):
        log.add(f"m{n}")
    assert len(path.read_text().splitlines()) < 2 * KEEP  # rewritten as it grew
    again = SentLog(path)
    again.open()
    assert f"m{3 * KEEP - 1}" in again
    assert f"m{3 * KEEP - KEEP}" in again
    assert f"m{3 * KEEP - KEEP - 1}" not in again
    assert "m0" not in again


def test_an_unwritable_place_is_said_and_done_without(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the directory should be")
    logger = RecordingLogger()
    log = SentLog(blocker / "sent", logger)
    log.open()
    log.add("x")
    assert "x" in log  # still remembered in memory
    assert logger.named("cannot keep the ids of sent messages")
