"""``make bench``: every benchmark, figures printed (copy them to docs/benchmarks.md).

``python -m tests.bench [SECTION ...]`` runs only the sections named (all by default); the
peers comparison is ``make bench-peers`` (``python -m tests.bench.peers``).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from collections.abc import Callable

import structlog

from . import bus, cluster, commands, irc, matrix, supervisor, xmpp


def _sections() -> dict[str, tuple[str, Callable[[], object]]]:
    return {
        "bus": (
            "raw nats-py vs eeveepy envelopes (publisher and subscriber processes)",
            lambda: bus.main(["--count", "200000", "--rounds", "5"]),
        ),
        "supervisor": ("start, restart, memory, pings; 200 operators", supervisor.main),
        "commands": ("chat message in -> router -> echo -> reply out, on the bus", commands.main),
        "irc": ("raw IRC client -> ngircd -> connector -> router -> echo -> back", irc.main),
        "xmpp": ("slixmpp client -> Prosody -> connector -> router -> echo -> back", xmpp.main),
        "matrix": (
            "client -> Synapse -> connector -> router -> echo -> back, vs a plain echo loop",
            matrix.main,
        ),
        "cluster": (
            "failover of a connector to a standby supervisor on a 3-node NATS cluster",
            cluster.main,
        ),
    }


def main(argv: list[str] | None = None) -> None:
    """Run the sections asked for (every one by default), in order."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    sections = _sections()
    parser.add_argument(
        "sections",
        nargs="*",
        metavar="SECTION",
        help=f"any of: {', '.join(sections)} (default: all)",
    )
    wanted = parser.parse_args(argv).sections or list(sections)
    unknown = [name for name in wanted if name not in sections]
    if unknown:
        parser.error(f"no section {', '.join(unknown)}: give any of {', '.join(sections)}")
    # The benchmarks measure; the supervisor's info logs would only add noise and CPU.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus,"
        f" python {sys.version.split()[0]}, {platform.platform()}"
    )
    for name in wanted:
        title, run = sections[name]
        print(f"== {name}: {title}")
        run()


if __name__ == "__main__":
    main()
