"""``make bench-peers``: eeveepy beside Sopel and errbot, one harness, one ngircd, one run.

Every bot answers ``!echo`` in a channel of its own on the same per-run ngircd, flood control
off for all; one raw IRC client measures each in turn (``--rounds`` times, the bots taking
turns): ``--count`` sequential round trips (p50, p99), then a burst of ``--burst`` sent in one
write (commands per second, every answer present and in order). Then the memory of each bot's
whole process tree (PSS). The table gives each figure as a ratio to the best peer's of the
same run, with that run's absolute figures beside it; then the bus hops of one eeveepy round
trip (eeveepy's, and the top tier's of the floor). Beside the peers run the floor's tiers
(:mod:`tests.bench.peers.floor`): eeveepy's path as raw relays, then with each of its required
parts added in turn, so each part's cost is measured in the same run. Without the peers (no
venv, no network to make one) it measures eeveepy alone, and says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats
import structlog

from tests.bench.ircload import Load, load, ready
from tests.irc_servers import IrcClient, ServerUnavailable, find_binary, running_ngircd
from tests.supervisor_fixtures import ROOT

from . import bots, cpu, hops
from .floor import FloorBot, floor
from .relays import STORES_ONLY, TIERS
from .table import Figures, render
from .tiers import PREFIX

START_TIMEOUT = 60.0
"""Seconds a bot gets from its start to answering ``!echo``."""


def _median(loads: list[Load], bot: bots.Running, peer: bool, cpu_us: float) -> Figures:
    pss, processes = bot.pss()
    return Figures(
        bot=bot.name,
        peer=peer,
        p50_us=statistics.median(x.p50_us for x in loads),
        p99_us=statistics.median(x.p99_us for x in loads),
        burst_per_s=statistics.median(x.burst_per_s for x in loads),
        missing=max(x.missing for x in loads),
        in_order=all(x.in_order for x in loads),
        pss_bytes=pss,
        processes=processes,
        cpu_us=cpu_us,
    )


async def _measure(
    port: int, running: list[bots.Running], rounds: int, count: int, burst_of: int
) -> tuple[dict[str, list[Load]], dict[str, float]]:
    """Each bot's loads, and its tree's CPU µs per command over them all."""
    client = await IrcClient.connect(port, "bencher")
    try:
        for bot in running:
            await client.join(bot.channel)
            await ready(client, bot.nick, bot.channel, START_TIMEOUT)
            await load(client, bot.nick, bot.channel, count=50, burst_of=50)  # warm-up
        loads: dict[str, list[Load]] = {bot.name: [] for bot in running}
        used: dict[str, list[tuple[str, float]]] = {bot.name: [] for bot in running}
        for _ in range(rounds):
            for bot in running:
                before = cpu.take(bot.tree())
                loads[bot.name].append(
                    await load(client, bot.nick, bot.channel, count=count, burst_of=burst_of)
                )
                used[bot.name] += cpu.spent(before, cpu.take(bot.tree()))
        commands = rounds * (count + burst_of)
        per_command: dict[str, float] = {}
        for name, rows in used.items():
            by_title: dict[str, float] = {}
            for title, seconds in rows:
                by_title[title] = by_title.get(title, 0.0) + seconds
            total = sum(by_title.values())
            per_command[name] = total / commands * 1e6
            top = sorted(by_title.items(), key=lambda kv: -kv[1])[:6]
            print(
                f"  {name}: CPU {total / commands * 1e6:.0f} µs per command ("
                + ", ".join(f"{t}: {s / commands * 1e6:.0f}" for t, s in top)
                + ")"
            )
        return loads, per_command
    finally:
        await client.close()


def run(
    python: Path | None,
    loops: list[str],
    base: Path | None,
    rounds: int,
    count: int,
    burst_of: int,
    floors: list[str],
) -> int:
    """Start every bot (``floors``: the floor's tiers to run), measure, print; the exit code."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp,
        running_ngircd() as ircd,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        running: list[bots.Running] = []
        t0 = time.monotonic()
        if python is not None:
            running.append(stack.enter_context(bots.errbot(python, ircd.port, "#errbot", workdir)))
            running.append(stack.enter_context(bots.sopel(python, ircd.port, "#sopel", workdir)))
        peers = {bot.name for bot in running}
        for tier in floors:
            part = TIERS.get(tier, STORES_ONLY)
            running.append(stack.enter_context(floor(ircd.port, workdir, part)))
        systems = []
        for loop, tree in [(loop, None) for loop in loops] + ([("auto", base)] if base else []):
            channel = f"#eevee-{loop}" + ("-base" if tree else "")
            eevee, system = stack.enter_context(
                bots.eeveepy(ircd.port, channel, workdir, loop, tree)
            )
            running.append(eevee)
            systems.append((eevee, system))
        try:
            loads, cpu_us = asyncio.run(_measure(ircd.port, running, rounds, count, burst_of))
        except AssertionError as e:
            for name in ("errbot", "sopel"):
                print(f"--- {name} output:\n{bots.output(workdir, name)}")
            for _, system in systems:
                print(f"--- eevee up output:\n{system.log()[-2000:]}")
            print(f"  failed: {e}")
            return 1
        figures = [_median(loads[b.name], b, b.name in peers, cpu_us[b.name]) for b in running]
        print(f"  {rounds} round(s) of {count} sequential + a burst of {burst_of}, bots in turn;")
        print(f"  started, measured in {time.monotonic() - t0:.0f} s")
        if python is None:
            for f in figures:
                print(
                    f"  {f.bot} alone: p50 {f.p50_us / 1000:.2f} ms, p99 {f.p99_us / 1000:.2f} ms,"
                    f" burst {f.burst_per_s:,.0f} cmd/s ({f.missing} missing,"
                    f" {'in order' if f.in_order else 'OUT OF ORDER'}),"
                    f" {f.pss_bytes / 2**20:.1f} MB PSS in {f.processes} processes"
                )
        else:
            print(render(figures))
        for eevee, system in systems:
            print(f"  {eevee.name}:")
            print(hops.describe(asyncio.run(hops.tap(system, ircd.port, eevee))))
        floors_run = [bot for bot in running if isinstance(bot, FloorBot) and bot.tier.streams]
        top = [bot for bot in floors_run if not bot.tier.journal][-1:]
        for bot in top + [bot for bot in floors_run if bot.tier.journal]:
            print(f"  {bot.name}:")
            print(hops.describe(asyncio.run(_tap_floor(bot, ircd.port))))
    return 0


async def _tap_floor(bot: FloorBot, port: int) -> tuple[list[hops.Hop], str]:
    return await hops.tap_bus(await nats.connect(bot.url), PREFIX, port, bot)


def _peers_python(python: Path) -> Path | None:
    why = bots.peers_missing(python)
    if why:
        print(f"  the peers cannot run, eeveepy is measured alone: {why}")
        return None
    return python


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.peers", description=__doc__)
    parser.add_argument(
        "--peers-python",
        type=Path,
        default=ROOT / ".bench" / "peers" / "bin" / "python",
        help="the interpreter of the venv holding sopel and errbot[irc]",
    )
    parser.add_argument(
        "--loops",
        default="auto",
        help="eeveepy systems to run, one per EEVEE_LOOP value (auto, uvloop, asyncio), e.g."
        " uvloop,asyncio to compare the event loops in one run",
    )
    parser.add_argument(
        "--base",
        type=Path,
        help="another checkout of eeveepy (e.g. a worktree of main) measured in the same run",
    )
    parser.add_argument(
        "--floor-only",
        action="store_true",
        help="run the floor alone, not its tiers (each adding one of eeveepy's required parts:"
        f" {', '.join(TIERS)})",
    )
    parser.add_argument(
        "--floor-split",
        action="store_true",
        help=f"also run {STORES_ONLY.name}: the stored publishes of the streams' tier without"
        " its backstops, to tell storing from consuming",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--burst", type=int, default=300)
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    if find_binary("ngircd") is None:
        print("  skipped: ngircd is not installed (apt-get install ngircd; `make chat-servers`)")
        return 0
    python = _peers_python(args.peers_python.absolute())  # (not resolve(): keep the venv)
    try:
        loops = args.loops.split(",")
        floors = ["floor"] if args.floor_only else list(TIERS)
        if args.floor_split:
            floors.insert(2, STORES_ONLY.name)  # (after floor+envelopes)
        return run(python, loops, args.base, args.rounds, args.count, args.burst, floors)
    except ServerUnavailable as e:
        print(f"  skipped: {e}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
