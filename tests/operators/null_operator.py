"""The smallest Python operator: connects, announces ready, answers pings, nothing else."""

from __future__ import annotations

from eeveepy.runtime.operator import Operator


def main() -> None:
    Operator().run()


if __name__ == "__main__":
    main()
