"""The peers benchmark's pure parts: ratios to the best peer, the table, IRC formatting, the
configuration eeveepy is measured with (no bots run here: ``make bench-peers`` does that)."""

from __future__ import annotations

import tomllib

import pytest

pytest.register_assert_rewrite("tests.irc_servers")  # imported below, before its own tests

from tests.bench.ircload import plain  # noqa: E402
from tests.bench.peers.bots import eeveepy_config  # noqa: E402
from tests.bench.peers.cpu import _title  # noqa: E402
from tests.bench.peers.hops import PATH, Hop, label  # noqa: E402
from tests.bench.peers.table import Figures, best_peers, ratios, render  # noqa: E402


def fig(
    bot: str, p50: float, p99: float, burst: float, mb: int, cpu: float, *, peer: bool = True
) -> Figures:
    return Figures(bot, peer, p50, p99, burst, 0, True, mb * 2**20, 1, cpu)


FIGURES = [
    fig("errbot", 800, 1500, 1800, 50, 700),
    fig("Sopel", 1400, 3000, 800, 40, 1100),
    fig("eeveepy", 1200, 4500, 3600, 120, 2800, peer=False),
]


def test_each_column_takes_its_own_best_peer() -> None:
    best = best_peers(FIGURES)
    assert {k: v.bot for k, v in best.items()} == {
        "p50": "errbot",
        "p99": "errbot",
        "burst": "errbot",
        "memory": "Sopel",
        "cpu": "errbot",
    }


def test_the_system_under_test_is_never_the_baseline() -> None:
    faster = [*FIGURES[:2], fig("eeveepy", 100, 100, 99999, 1, 1, peer=False)]
    assert {v.bot for v in best_peers(faster).values()} <= {"errbot", "Sopel"}


def test_ratios_to_the_best_peer() -> None:
    eevee = ratios(FIGURES)[2]
    assert eevee.p50 == pytest.approx(1.5)
    assert eevee.p99 == pytest.approx(3.0)
    assert eevee.burst == pytest.approx(2.0)
    assert eevee.memory == pytest.approx(3.0)
    assert eevee.cpu == pytest.approx(4.0)
    assert ratios(FIGURES)[0].p50 == 1.0


def test_no_peer_no_ratio() -> None:
    with pytest.raises(ValueError, match="no peer"):
        ratios([FIGURES[2]])


def test_the_table_names_its_baselines_and_flags_disorder() -> None:
    late = Figures("Sopel", True, 1400, 3000, 800, 3, False, 40 * 2**20, 1, 1100)
    table = render([FIGURES[0], late, FIGURES[2]])
    assert "| eeveepy | \N{MULTIPLICATION SIGN}1.50 | \N{MULTIPLICATION SIGN}3.00 |" in table
    assert "3 missing, OUT OF ORDER" in table
    assert "baselines (best peer of this run): p50 errbot" in table
    assert "memory Sopel, cpu errbot" in table
    assert "| all, in order | \N{MULTIPLICATION SIGN}4.00 | \N{MULTIPLICATION SIGN}3.00 |" in table
    assert "2800 µs CPU per command" in table


def test_irc_formatting_is_stripped_before_comparing() -> None:
    assert plain("b12\x03") == "b12"
    assert plain("\x02\x0304,12b12\x0f ") == "b12"


def test_eeveepy_runs_the_default_configuration_plus_one_connector() -> None:
    config = tomllib.loads(eeveepy_config(6667, "#eevee"))
    irc = config["operators"]["irc.bench"]
    assert irc["settings"]["egress_lines"] == 0
    assert irc["settings"]["channels"] == ["#eevee"]
    assert {"router", "echo", "logging", "seen", "karma"} <= set(config["operators"])


def test_hops_are_told_apart_by_subject_and_reply() -> None:
    def hop(subject: str, reply: str = "", head: bytes = b"") -> Hop:
        return Hop(0.0, subject, reply, head, len(head))

    assert label(hop("eevee.chat.in.irc.n.#r", "_INBOX.x.1"), "eevee")[0] == PATH
    assert label(hop("eevee.chat.in.irc.n.#r", "$JS.ACK.S.router.1.2.3.4.5"), "eevee")[0] == (
        "guarantee"
    )
    assert label(hop("eevee.command.run.echo", "_INBOX.r.1"), "eevee")[0] == PATH
    assert label(hop("eevee.chat.out.irc.n", "_INBOX.e.1"), "eevee")[0] == PATH
    assert label(hop("_INBOX.e.1", head=b'{"stream":"X"'), "eevee")[0] == "guarantee"
    assert label(hop("_INBOX.router.1", head=b'{"v":1,'), "eevee")[0] == "result"
    assert label(hop("$KV.eevee_seen.x"), "eevee")[0] == "other"


def test_processes_are_named_for_the_cpu_table() -> None:
    py = "/venv/bin/python3.11"
    assert _title(["eevee: router", ""]) == "eevee: router"
    assert _title([py, "-m", "tests.bench.peers.relays", "floor", "echo", "nats://x"]) == "echo"
    assert _title([py, "-m", "operators.echo"]) == "python3.11 echo"
    assert _title([py, "/v/bin/errbot", "-c", "x"]) == "python3.11 errbot"
    assert _title(["/usr/bin/nats-server", "-p", "1"]) == "nats-server"
