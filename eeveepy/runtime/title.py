"""The process title: what ``ps``, ``top`` and ``pgrep`` show for an operator.

Forked by the fork server, every Python operator would otherwise show the fork server's own
command line (``python -m eeveepy.supervisor.forkserver 7``). ``setproctitle`` rewrites the
command line in place (``/proc/<pid>/cmdline``) and the short name (``comm``), portably.
"""

from __future__ import annotations

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
    setproctitle.setproctitle(title)
