"""The configuration file, ``eevee.toml``: finding it, loading it, and saying what is wrong.

A configuration looks like this (``config/eevee.toml`` is the commented example)::

    prefix = "eevee"            # subject prefix

    [bus]                       # no url: `eevee up` starts an embedded nats-server
    [supervisor]                # supervisor settings, and defaults for every operator
    ping_interval = 2

    [operators.echo]            # the operator "echo"; the id is the table name
    module = "operators.echo"   # run as `python -m operators.echo` (or: command = [...])
    ping_interval = 5           # overrides the [supervisor] default
    settings = { greeting = "hi" }

    [paths]                     # optional overrides of the platform directories
    state_dir = "../.eevee-state"

Each operator's ``settings`` may also live in ``operators.d/<id>.toml`` next to the file; that
file is merged under the inline ``settings`` (inline keys win, tables merge key by key).

:func:`load_config` reports every problem at once, each located by file and key path
(``config/eevee.toml: operators.echo.restart``), in one :class:`~eeveepy.errors.ConfigError`.

The package, by concern: :mod:`~eeveepy.config.operators` (the operator tables and their
defaults), :mod:`~eeveepy.config.models` (the whole file), :mod:`~eeveepy.config.load` (search
order, reading, validating), :mod:`~eeveepy.config.merge` (``operators.d``) and
:mod:`~eeveepy.config.problems` (locating and wording each problem). Import from here.
"""

from __future__ import annotations

from eeveepy.config.load import CONFIG_ENV, CONFIG_FILENAME, check_config, find_config, load_config
from eeveepy.config.merge import OPERATORS_DIR
from eeveepy.config.models import Config, PathsConfig, SupervisorConfig
from eeveepy.config.operators import OperatorConfig, OperatorDefaults, RestartPolicy

__all__ = [
    "CONFIG_ENV",
    "CONFIG_FILENAME",
    "OPERATORS_DIR",
    "Config",
    "OperatorConfig",
    "OperatorDefaults",
    "PathsConfig",
    "RestartPolicy",
    "SupervisorConfig",
    "check_config",
    "find_config",
    "load_config",
]
