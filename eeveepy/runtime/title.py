"""The process title: what ``ps``, ``top`` and ``pgrep`` show for an operator.

Forked by the fork server, every Python operator would otherwise show the fork server's own
command line (``python -m eeveepy.supervisor.forkserver 7``). ``setproctitle`` rewrites the
command line in place (``/proc/<pid>/cmdline``) and the short name (``comm``), portably.

Only in the space of the original command line (``SPT_NOENV``): by default setproctitle also
takes the environment's space beyond it, which empties ``/proc/<pid>/environ``, where tools
(and the tests) look for an operator's ``EEVEE_*`` variables. ``eevee: <id>`` is shorter than
``python -m <module>`` anyway; a longer title is cut.
"""

from __future__ import annotations

import os

__all__ = ["operator_title", "set_title"]


def operator_title(operator_id: str) -> str:
    """The title of operator ``operator_id``'s process: ``eevee: <id>``."""
    return f"eevee: {operator_id}"


def set_title(title: str) -> None:
    """Show ``title`` for this process (a best effort: some platforms cannot)."""
    try:
        import setproctitle
    except ImportError:  # pragma: no cover - a dependency; a broken install only loses titles
        return
    ours = "SPT_NOENV" not in os.environ
    if ours:  # read when the title is first set; not left for the operator's own children
        os.environ["SPT_NOENV"] = "1"
    try:
        setproctitle.setproctitle(title)
    finally:
        if ours:
            os.environ.pop("SPT_NOENV", None)
