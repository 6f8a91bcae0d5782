"""CPU time each process of a bot's tree spent while it was measured."""

from __future__ import annotations

import contextlib

import psutil

__all__ = ["Sample", "spent", "take"]

Sample = dict[int, tuple[str, float]]
"""pid -> (process title, user + system CPU seconds so far)."""


def _title(argv: list[str]) -> str:
    """A short name: an operator's title (``eevee: router``), a floor relay's role, else the
    program's name and, for an interpreter, what it runs."""
    if not argv:
        return ""
    if argv[0].startswith("eevee:"):
        return " ".join(argv).strip()
    name = argv[0].rsplit("/", 1)[-1]
    if name.startswith("python") and len(argv) > 2 and argv[1] == "-m":
        if argv[2].endswith(".relays"):  # the floor's: its role (the tier is the bot's name)
            return " ".join(argv[4:5]) or name
        name += " " + argv[2].rsplit(".", 1)[-1]
    elif name.startswith("python") and len(argv) > 1 and not argv[1].startswith("-"):
        name += " " + argv[1].rsplit("/", 1)[-1]
    return name


def take(procs: list[psutil.Process]) -> Sample:
    """The CPU seconds of each process now."""
    out: Sample = {}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            title = _title(proc.cmdline()) or proc.name()
            out[proc.pid] = (title, times.user + times.system)
    return out


def spent(before: Sample, after: Sample) -> list[tuple[str, float]]:
    """CPU seconds spent by each process between two samples, the most first."""
    rows = [(title, cpu - before.get(pid, (title, 0.0))[1]) for pid, (title, cpu) in after.items()]
    return sorted(rows, key=lambda row: -row[1])
