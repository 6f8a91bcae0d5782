"""``make bench``: every benchmark, figures printed, docs/benchmarks.md to be updated by hand."""

from __future__ import annotations

import os
import platform
import sys

from . import bus


def main() -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {sys.version.split()[0]}")
    print("== bus: raw nats-py vs eeveepy envelopes (publisher and subscriber processes)")
    bus.main(["--count", "200000", "--rounds", "3"])


if __name__ == "__main__":
    main()
