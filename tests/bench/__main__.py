"""``make bench``: every benchmark, figures printed (copy them to docs/benchmarks.md)."""

from __future__ import annotations

import logging
import os
import platform
import sys

import structlog

from . import bus, cluster, commands, irc, matrix, supervisor, xmpp


def main() -> None:
    # The benchmarks measure; the supervisor's info logs would only add noise and CPU.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus,"
        f" python {sys.version.split()[0]}, {platform.platform()}"
    )
    print("== bus: raw nats-py vs eeveepy envelopes (publisher and subscriber processes)")
    bus.main(["--count", "200000", "--rounds", "5"])
    print("== supervisor")
    supervisor.main()
    print("== commands: chat message in -> router -> echo -> reply out, on the bus")
    commands.main()
    print("== irc: raw IRC client -> ngircd -> connector -> router -> echo -> back")
    irc.main()
    print("== xmpp: slixmpp client -> Prosody -> connector -> router -> echo -> back")
    xmpp.main()
    print(
        "== matrix: client -> Synapse -> connector -> router -> echo -> back, vs a plain echo loop"
    )
    matrix.main()
    print("== cluster: failover of a connector to a standby supervisor on a 3-node NATS cluster")
    cluster.main()


if __name__ == "__main__":
    main()
