"""Finding the configuration file and loading it, every problem reported at once."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from eeveepy.config.files import read_toml
from eeveepy.config.merge import merge_operator_file
from eeveepy.config.models import Config
from eeveepy.config.problems import problem
from eeveepy.errors import ConfigError
from eeveepy.paths import Paths

__all__ = [
    "CONFIG_ENV",
    "CONFIG_FILENAME",
    "check_config",
    "find_config",
    "load_config",
]

CONFIG_ENV = "EEVEE_CONFIG"
"""Environment variable naming the configuration file."""

CONFIG_FILENAME = "eevee.toml"
"""The configuration file's name in the default locations."""


def find_config(explicit: Path | None = None) -> Path | None:
    """Find the configuration file; ``None`` means none exists (use the built-in defaults).

    The search order is ``explicit`` (e.g. ``--config``), then ``$EEVEE_CONFIG``, then
    ``./config/eevee.toml``, then ``eevee.toml`` in :attr:`Paths.config_dir` (e.g.
    ``~/.config/eevee/eevee.toml``). The first two must exist when given: a missing one raises
    :class:`~eeveepy.errors.ConfigError` instead of silently falling back.
    """
    if explicit is not None:
        return _must_be_file(
            explicit.expanduser(),
            "was given explicitly",
            "check the path, or leave it out to search the default locations",
        )
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return _must_be_file(
            Path(from_env).expanduser(),
            f"is named by ${CONFIG_ENV}",
            f"fix the path, or unset {CONFIG_ENV} to search the default locations",
        )
    for candidate in (
        Path("config") / CONFIG_FILENAME,
        Paths.default().config_dir / CONFIG_FILENAME,
    ):
        if candidate.is_file():
            return candidate
    return None


def _must_be_file(path: Path, how: str, fix: str) -> Path:
    if path.is_file():
        return path
    what = "is not a file" if path.exists() else "does not exist"
    raise ConfigError(
        f"configuration file {path} {what}",
        problems=[(str(path), f"this configuration file {how} but {what}; {fix}")],
    )


def load_config(path: Path | None) -> Config:
    """Load and validate the configuration in ``path``; ``None`` gives the built-in defaults.

    ``operators.d/<id>.toml`` next to ``path`` is merged under each operator's inline
    ``settings``; such files for ids the configuration does not name are ignored.

    Raises:
        ConfigError: ``"invalid configuration"`` with every problem found, each as
            ``(location, message)``: TOML syntax errors with line and column, unknown keys,
            invalid values, operator ids, module/command mix-ups, and broken ``operators.d``
            files under their own names.
    """
    if path is None:
        return Config()
    label = str(path)
    problems: list[tuple[str, str]] = []
    raw = read_toml(path, label, problems)
    if raw is None:
        raise ConfigError("invalid configuration", problems=problems)
    file_problems: list[tuple[str, str]] = []  # from operators.d, listed after the main file's
    if "source" in raw:  # a model field, but set from the file's path, never by the file
        del raw["source"]
        problems.append((f"{label}: source", "unknown key"))
    operators = raw.get("operators")
    if isinstance(operators, dict):
        raw["operators"] = {
            key: merge_operator_file(path.parent, key, table, file_problems)
            for key, table in operators.items()
        }
    config: Config | None = None
    try:
        config = Config.model_validate({**raw, "source": path.resolve()})
    except ValidationError as exc:
        problems.extend(problem(err, label) for err in exc.errors(include_url=False))
    problems.extend(file_problems)
    if problems or config is None:
        raise ConfigError("invalid configuration", problems=list(dict.fromkeys(problems)))
    return config


def check_config(path: Path | None) -> list[tuple[str, str]]:
    """Every problem :func:`load_config` would raise for ``path``; empty when it is valid."""
    try:
        load_config(path)
    except ConfigError as exc:
        return exc.problems or [(str(path), str(exc))]
    return []
