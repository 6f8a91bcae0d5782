"""Reading the embedded nats-server's log: a failure quotes its last lines with a hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from eeveepy.bus.natslog import LOG_TAIL_LINES, ServerLog, Setting, failure, hint

SETTING = Setting("127.0.0.1", 4222, Path("/s"), Path("/s/conf/c.conf"), Path("/s/n.log"))


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("[1] [FTL] Error listening on port: 4222, address already in use", "already in use"),
        ("[1] [FTL] listen tcp :80: bind: permission denied", "use a port above 1023"),
        ("[1] [FTL] cannot assign requested address", "is not an address of this machine"),
        ("[1] [ERR] JetStream storage directory not writable", "JetStream could not use /s"),
        ("nats-server: /s/conf/c.conf:3:1: parse error", "configuration /s/conf/c.conf"),
        ("[1] [INF] nothing wrong here", "see the full log in /s/n.log"),
    ],
)
def test_each_known_failure_gets_its_hint(line: str, says: str) -> None:
    assert says in hint(["[1] [INF] Starting nats-server", line], SETTING)


def test_a_failure_quotes_the_current_runs_last_lines(tmp_path: Path) -> None:
    log = ServerLog(tmp_path / "n.log")
    assert log.size() == 0  # no file yet
    assert log.read() == ""
    log.path.write_text("old run\n")
    log.start = log.size()
    with log.path.open("a") as f:
        f.writelines(f"[1] [INF] line {n}\n" for n in range(20))
        f.write("[1] [FTL] address already in use\n")
    text = str(failure("nats-server exited", log, SETTING))
    assert text.startswith("nats-server exited.\nHint: port 4222 on 127.0.0.1 is already in use")
    quoted = text.split("Last lines of")[1].splitlines()[1:]
    assert len(quoted) == LOG_TAIL_LINES
    assert "old run" not in text
    assert "given hint" in str(failure("x", log, SETTING, "given hint"))
