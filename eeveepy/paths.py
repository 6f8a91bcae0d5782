"""Where eeveepy keeps its files: state, logs, caches, data and configuration.

The defaults follow the platform's conventions through :mod:`platformdirs`; on Linux that is
the XDG base directories, so setting ``XDG_STATE_HOME``, ``XDG_CACHE_HOME``, ``XDG_DATA_HOME``
and ``XDG_CONFIG_HOME`` gives an installation (or a test) directories of its own::

    state_dir    $XDG_STATE_HOME/eevee     (~/.local/state/eevee)   supervisor.json, jetstream/,
                                                                 operators/<id>/settings.json
    log_dir      $XDG_STATE_HOME/eevee/log (~/.local/state/eevee/log)
    cache_dir    $XDG_CACHE_HOME/eevee     (~/.cache/eevee)         operators/<id>/
    data_dir     $XDG_DATA_HOME/eevee      (~/.local/share/eevee)   operators/<id>/
    config_dir   $XDG_CONFIG_HOME/eevee    (~/.config/eevee)        eevee.toml

The environment is read when :meth:`Paths.default` is called, never at import time.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from eeveepy.protocol.subjects import validate_operator_id

__all__ = ["DEFAULT_APP", "OperatorPaths", "Paths"]

DEFAULT_APP = "eevee"
"""The application name the default directories are named after."""

_PRIVATE_DIR_MODE = 0o700


@dataclass(frozen=True)
class OperatorPaths:
    """The files and directories of one operator id, built once (see :meth:`Paths.operator`)."""

    id: str
    """The operator id (validated: it cannot climb out of a directory)."""
    settings_file: Path
    """``state_dir/operators/<id>/settings.json``: the settings it re-reads on SIGHUP."""
    cache_dir: Path
    """``cache_dir/operators/<id>``: emptied by the supervisor before each start."""
    data_dir: Path
    """``data_dir/operators/<id>``: kept across starts."""


@dataclass(frozen=True)
class Paths:
    """The directories of one installation.

    Build the platform defaults with :meth:`Paths.default`; a configuration's ``[paths]``
    table overrides some of them (see :meth:`eeveepy.config.Config.resolved_paths`).
    Nothing is created until :meth:`ensure` is called.
    """

    state_dir: Path
    """Runtime state: the supervisor's state file and the embedded server's JetStream store."""
    log_dir: Path
    """Log files."""
    cache_dir: Path
    """Caches that may be deleted at any time; one subdirectory per operator."""
    data_dir: Path
    """Data to keep; one subdirectory per operator."""
    config_dir: Path
    """Where the user's ``eevee.toml`` is looked for."""

    @classmethod
    def default(cls, app: str = DEFAULT_APP) -> Paths:
        """The platform's user directories for ``app``, honouring the ``XDG_*`` variables."""
        return cls(
            state_dir=Path(platformdirs.user_state_dir(app, appauthor=False)),
            log_dir=Path(platformdirs.user_log_dir(app, appauthor=False)),
            cache_dir=Path(platformdirs.user_cache_dir(app, appauthor=False)),
            data_dir=Path(platformdirs.user_data_dir(app, appauthor=False)),
            config_dir=Path(platformdirs.user_config_dir(app, appauthor=False)),
        )

    @property
    def state_file(self) -> Path:
        """The running supervisor's state file, ``state_dir/supervisor.json``."""
        return self.state_dir / "supervisor.json"

    @property
    def jetstream_dir(self) -> Path:
        """The embedded nats-server's JetStream store, ``state_dir/jetstream``."""
        return self.state_dir / "jetstream"

    def operator_cache_dir(self, op_id: str) -> Path:
        """``cache_dir/operators/<op_id>``; raises :class:`~eeveepy.errors.SubjectError` for a
        bad id (so an id can never climb out of the directory)."""
        return self.cache_dir / "operators" / validate_operator_id(op_id)

    def operator_data_dir(self, op_id: str) -> Path:
        """``data_dir/operators/<op_id>``; raises :class:`~eeveepy.errors.SubjectError` for a
        bad id."""
        return self.data_dir / "operators" / validate_operator_id(op_id)

    def operator(self, op_id: str) -> OperatorPaths:
        """Every path of operator ``op_id``; raises :class:`~eeveepy.errors.SubjectError` for a
        bad id."""
        op_id = validate_operator_id(op_id)
        return OperatorPaths(
            id=op_id,
            settings_file=self.state_dir / "operators" / op_id / "settings.json",
            cache_dir=self.operator_cache_dir(op_id),
            data_dir=self.operator_data_dir(op_id),
        )

    def ensure(self) -> Paths:
        """Create the state, log, cache and data directories (not ``config_dir``); return self.

        Directories it creates get mode 0700. ``state_dir`` is made 0700 even if it already
        existed, since the state file holds credentials for the bus.
        """
        for directory in (self.state_dir, self.log_dir, self.cache_dir, self.data_dir):
            directory.mkdir(mode=_PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        mode = stat.S_IMODE(self.state_dir.stat().st_mode)
        if mode & 0o077:
            os.chmod(self.state_dir, _PRIVATE_DIR_MODE)
        return self

    def check_writable(self) -> Paths:
        """Create and remove a file in the state, log, cache and data directories; return self.

        Raises the :class:`OSError` of the first that cannot be written (read-only file
        system, immutable directory, ...), whose ``filename`` names it. Permission bits alone
        say little (root ignores them), so this really writes.
        """
        for directory in (self.state_dir, self.log_dir, self.cache_dir, self.data_dir):
            probe = directory / f".write-check-{os.getpid()}"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(fd)
            probe.unlink()
        return self
