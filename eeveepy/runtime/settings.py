"""An operator's settings: read from the process contract and validated against its model.

The settings file (``EEVEE_SETTINGS_FILE``, JSON or TOML) wins over ``EEVEE_SETTINGS`` (a JSON
object); it is read again at each reload. Every problem is reported at once, as a
:class:`~eeveepy.errors.ConfigError` whose problems name the source and the key path.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from structlog.typing import FilteringBoundLogger

from eeveepy.errors import ConfigError
from eeveepy.problems import Problem, key_path, problem, problems
from eeveepy.runtime.contract import ENV_SETTINGS, Launch

__all__ = ["AnySettings", "load_settings", "located", "log_problems", "read_settings"]

S = TypeVar("S", bound=BaseModel)


class AnySettings(BaseModel):
    """The settings of an operator that declares no model: any JSON object, kept as given."""

    model_config = ConfigDict(frozen=True, extra="allow")


def read_settings(launch: Launch, log: FilteringBoundLogger) -> tuple[str, Any]:
    """``(label, parsed data)`` from the settings file if it exists, else EEVEE_SETTINGS."""
    path = launch.settings_file
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:  # (Path.read_text: more code run)
                text = f.read()
        except FileNotFoundError:
            log.warning("settings file not found: using EEVEE_SETTINGS", path=str(path))
        except OSError as exc:
            raise ConfigError("cannot read the settings", [(str(path), str(exc))]) from None
        else:
            try:
                if path.suffix == ".toml":
                    return str(path), tomllib.loads(text)
                return str(path), json.loads(text)
            except ValueError as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
                raise ConfigError("invalid settings", [(str(path), str(exc))]) from None
    try:
        return ENV_SETTINGS, json.loads(launch.settings_json)
    except ValueError as exc:
        raise ConfigError("invalid settings", [(ENV_SETTINGS, f"not JSON: {exc}")]) from None


def load_settings(launch: Launch, model: type[S], log: FilteringBoundLogger) -> S:
    """Read and validate the settings; raise :class:`ConfigError` listing every problem."""
    label, data = read_settings(launch, log)
    if not isinstance(data, dict):
        raise ConfigError("invalid settings", [(label, "must be a JSON object")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("invalid settings", located(exc, label, launch.settings_origin)) from None


def located(exc: ValidationError, label: str, origin: str | None) -> list[Problem]:
    """The problems of ``exc``, placed where the settings were written when ``origin`` (see
    :data:`~eeveepy.runtime.contract.ENV_SETTINGS_ORIGIN`) says so, else under ``label``."""
    try:
        where = json.loads(origin or "null")
        file, key = str(where["file"]), [str(k) for k in where["key"]]
        also = where.get("also")
    except (ValueError, TypeError, KeyError, AttributeError):
        return problems(exc, label)
    found = []
    for err in exc.errors(include_url=False):
        place, what = problem(file, err, loc=[*key, *err["loc"]])
        if also:  # merged from operators.d: the key may be written there instead
            what += f" (or in {also}: {key_path(err['loc']) or 'the whole file'})"
        found.append((place, what))
    return found


def log_problems(log: FilteringBoundLogger, event: str, exc: ConfigError) -> None:
    """Log ``exc`` as ``event``, one line per problem."""
    if not exc.problems:
        log.error(event, error=str(exc))
    for where, what in exc.problems:
        log.error(event, where=where, problem=what)
