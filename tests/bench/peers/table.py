"""The peers table: each bot's figures as ratios to the best peer's, pure (no I/O).

Each column has its own baseline: the best *peer* (not eeveepy) for that figure in the same
run: the lowest p50, the lowest p99, the highest burst rate, the least memory, the least CPU
time per command. A ratio above
1 is slower or bigger for the latencies, memory and CPU, faster for the burst.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Figures", "Ratios", "best_peers", "ratios", "render"]

TIMES = "\N{MULTIPLICATION SIGN}"


@dataclass(frozen=True)
class Figures:
    """One bot's figures from one run (latencies in µs, memory in bytes)."""

    bot: str
    peer: bool
    """A single-process peer (Sopel, errbot), as opposed to the system under test."""
    p50_us: float
    p99_us: float
    burst_per_s: float
    missing: int
    in_order: bool
    pss_bytes: int
    processes: int
    cpu_us: float = 0.0
    """CPU time of the whole process tree per command."""


@dataclass(frozen=True)
class Ratios:
    """One bot's figures over the best peer's of each column."""

    bot: str
    p50: float
    p99: float
    burst: float
    memory: float
    cpu: float


_COLUMNS: dict[str, tuple[Callable[[Figures], float], bool]] = {
    "p50": (lambda f: f.p50_us, False),
    "p99": (lambda f: f.p99_us, False),
    "burst": (lambda f: f.burst_per_s, True),
    "memory": (lambda f: float(f.pss_bytes), False),
    "cpu": (lambda f: f.cpu_us, False),
}
"""Each column: the figure, and whether higher is better."""


def best_peers(figures: Sequence[Figures]) -> dict[str, Figures]:
    """The baseline of each column: the peer with the best figure (ValueError without peers)."""
    peers = [f for f in figures if f.peer]
    if not peers:
        raise ValueError("no peer measured: nothing to take ratios to")
    best: dict[str, Figures] = {}
    for column, (value, higher) in _COLUMNS.items():
        pick = max if higher else min
        best[column] = pick(peers, key=value)
    return best


def ratios(figures: Sequence[Figures]) -> list[Ratios]:
    """Every bot's figures as ratios to the column's best peer."""
    best = best_peers(figures)

    def over(f: Figures, column: str) -> float:
        value = _COLUMNS[column][0]
        base = value(best[column])
        return value(f) / base if base else float("inf")

    return [Ratios(f.bot, *(over(f, column) for column in _COLUMNS)) for f in figures]


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def render(figures: Sequence[Figures]) -> str:
    """A markdown table: ratios to the best peer of each column, the absolute figures beside."""
    best = best_peers(figures)
    lines = [
        _row(
            [
                "bot",
                "p50",
                "p99",
                "burst",
                "replies",
                "CPU per command",
                "memory (PSS)",
                "absolute (this run)",
            ]
        ),
        _row(["---"] * 8),
    ]
    for f, r in zip(figures, ratios(figures), strict=True):
        replies = ("all" if not f.missing else f"{f.missing} missing") + (
            ", in order" if f.in_order else ", OUT OF ORDER"
        )
        absolute = (
            f"{f.p50_us / 1000:.2f} / {f.p99_us / 1000:.2f} ms, {f.burst_per_s:,.0f} cmd/s,"
            f" {f.cpu_us:.0f} µs CPU per command,"
            f" {f.pss_bytes / 2**20:.1f} MB in {f.processes} process"
            + ("es" if f.processes != 1 else "")
        )
        lines.append(
            _row(
                [
                    f.bot,
                    f"{TIMES}{r.p50:.2f}",
                    f"{TIMES}{r.p99:.2f}",
                    f"{TIMES}{r.burst:.2f}",
                    replies,
                    f"{TIMES}{r.cpu:.2f}",
                    f"{TIMES}{r.memory:.2f}",
                    absolute,
                ]
            )
        )
    lines.append(
        "baselines (best peer of this run): "
        + ", ".join(f"{column} {best[column].bot}" for column in _COLUMNS)
    )
    return "\n".join(lines)
