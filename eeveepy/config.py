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
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from eeveepy.bus.client import BusConfig
from eeveepy.errors import ConfigError, SubjectError
from eeveepy.paths import Paths
from eeveepy.problems import problem
from eeveepy.protocol.subjects import DEFAULT_PREFIX, validate_operator_id, validate_prefix

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

CONFIG_ENV = "EEVEE_CONFIG"
"""Environment variable naming the configuration file."""

CONFIG_FILENAME = "eevee.toml"
"""The configuration file's name in the default locations."""

OPERATORS_DIR = "operators.d"
"""Directory next to the configuration file holding ``<operator id>.toml`` settings files."""

Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
"""A finite, positive duration in seconds."""

_MODEL_CONFIG = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)
_TOML_POSITION_RE = re.compile(r"^(?P<msg>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")
_TOML_END_RE = re.compile(r"^(?P<msg>.*) \(at end of document\)$")


class RestartPolicy(StrEnum):
    """When the supervisor restarts an operator whose process ended."""

    ALWAYS = "always"
    """Whatever the exit status."""
    ON_FAILURE = "on-failure"
    """Only after a non-zero exit status, a signal or a failed health check."""
    NEVER = "never"
    """Never; the operator stays stopped."""


class OperatorDefaults(BaseModel):
    """The per-operator settings ``[supervisor]`` gives defaults for.

    Each ``[operators.<id>]`` table may override any of them.
    """

    model_config = _MODEL_CONFIG

    restart: RestartPolicy = RestartPolicy.ALWAYS
    """When to restart the operator after its process ends."""
    start_timeout: Seconds = 10.0
    """Seconds from spawning until the operator must have said it is ready."""
    stop_timeout: Seconds = 5.0
    """Seconds a stopping operator gets before it is killed."""
    ping_interval: Seconds = 2.0
    """Seconds between health pings."""
    ping_timeout: Seconds = 2.0
    """Seconds to wait for the answer to one ping."""
    max_missed_pings: int = Field(default=3, ge=1)
    """Missed pings in a row after which the operator is restarted."""
    max_restarts: int = Field(default=5, ge=0)
    """Restarts allowed within ``restart_window`` before the operator is given up on."""
    restart_window: Seconds = 60.0
    """Seconds over which ``max_restarts`` is counted."""
    backoff_initial: Seconds = 0.5
    """Seconds to wait before the first restart; doubled on every further one."""
    backoff_max: Annotated[float, Field(gt=0, allow_inf_nan=False, validate_default=True)] = 30.0
    """Longest wait between restarts."""
    healthy_after: Seconds = 10.0
    """Seconds of running after which the backoff starts again from ``backoff_initial``."""

    @field_validator("backoff_max")
    @classmethod
    def _backoff_max_not_below_initial(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("backoff_initial")
        if initial is not None and value < initial:
            raise PydanticCustomError(
                "eevee_backoff_order",
                "backoff_max ({maximum}) is smaller than backoff_initial ({initial})",
                {"maximum": value, "initial": initial},
            )
        return value


_DEFAULT_KEYS = frozenset(OperatorDefaults.model_fields)


class SupervisorConfig(OperatorDefaults):
    """The ``[supervisor]`` table: the supervisor's own settings and operator defaults."""

    name: str | None = Field(default=None, min_length=1)
    """The supervisor's id; none means ``<hostname>-<pid>``."""
    shutdown_timeout: Seconds = 15.0
    """Seconds ``eevee down`` waits for everything to stop."""
    lease_ttl: Seconds = 10.0
    """Seconds the supervisor's lease on the bus lasts without being renewed."""
    log_history_max_age: Seconds = 7 * 86400.0
    """Seconds of log history the bus keeps for `eevee logs` (JetStream stream)."""
    log_history_max_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    """Bytes of log history the bus keeps at most; the oldest events go first."""
    forkserver: bool = Field(
        default=True,
        description="Start `module` operators by forking a preloaded Python process.",
    )
    """Start ``module`` operators from a preloaded fork server (much faster, less memory)."""


class OperatorConfig(OperatorDefaults):
    """One ``[operators.<id>]`` table: how to run an operator and what to give it.

    Exactly one of ``module`` and ``command`` is set. Values the table leaves out come from
    ``[supervisor]`` (applied by :class:`Config`), then from the built-in defaults.
    """

    id: str
    """The operator id; in a file it is the table name."""
    module: str | None = None
    """A Python module, run as ``python -m <module>`` with the supervisor's interpreter."""
    command: list[str] | None = Field(default=None, validate_default=True)
    """An executable and its arguments, for operators not written as a Python module."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables for the operator's process."""
    enabled: bool = True
    """False keeps the operator configured but not started."""
    role: str | None = None
    """The permission set the operator gets on the bus (reserved for later)."""
    settings: dict[str, Any] = Field(default_factory=dict)
    """Operator-specific settings, merged over ``operators.d/<id>.toml``."""

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        try:
            return validate_operator_id(value)
        except SubjectError as exc:
            raise PydanticCustomError(
                "eevee_operator_id", "{reason}", {"reason": str(exc)}
            ) from None

    @field_validator("module")
    @classmethod
    def _valid_module(cls, value: str | None) -> str | None:
        if value is not None and not all(part.isidentifier() for part in value.split(".")):
            raise PydanticCustomError(
                "eevee_module",
                "invalid module name {module!r}: expected a dotted Python module name such as "
                "'operators.echo'",
                {"module": value},
            )
        return value

    @field_validator("command")
    @classmethod
    def _one_of_module_or_command(
        cls, value: list[str] | None, info: ValidationInfo
    ) -> list[str] | None:
        if "module" not in info.data:  # the module itself is invalid: already reported
            return value
        module = info.data["module"]
        if value is not None and module is not None:
            raise PydanticCustomError(
                "eevee_module_and_command",
                "both module and command are set; keep one: module for a Python module run "
                "with `python -m`, command for any other executable",
            )
        if value is None and module is None:
            raise PydanticCustomError(
                "eevee_no_module_or_command",
                "neither module nor command is set; set module (a Python module run with "
                '`python -m`) or command (an executable and its arguments, e.g. ["./bot"])',
            )
        if value is not None and (not value or not value[0].strip()):
            raise PydanticCustomError(
                "eevee_empty_command",
                "command is empty; give the executable first, then its arguments",
            )
        return value

    @field_validator("env")
    @classmethod
    def _valid_env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not name or "=" in name or "\0" in name:
                raise PydanticCustomError(
                    "eevee_env_name",
                    "invalid environment variable name {name!r}: it must be non-empty and "
                    "contain no '=' or NUL",
                    {"name": name},
                )
        return value

    def argv(self, python: str | None = None) -> list[str]:
        """The command line that starts the operator.

        ``command`` as it is, or ``[python, "-m", module]`` where ``python`` defaults to the
        running interpreter.
        """
        if self.command is not None:
            return list(self.command)
        if self.module is None:  # pragma: no cover - validation guarantees one of the two
            raise ConfigError(f"operator {self.id!r} has neither module nor command")
        return [python or sys.executable, "-m", self.module]


class PathsConfig(BaseModel):
    """The ``[paths]`` table: directories that replace the platform defaults.

    ``~`` is expanded here; relative paths are resolved against the configuration file's
    directory by :meth:`Config.resolved_paths`.
    """

    model_config = _MODEL_CONFIG

    state_dir: Path | None = None
    """Replaces :attr:`Paths.state_dir` (and the log directory, unless ``log_dir`` is set)."""
    log_dir: Path | None = None
    """Replaces :attr:`Paths.log_dir`."""
    cache_dir: Path | None = None
    """Replaces :attr:`Paths.cache_dir`."""
    data_dir: Path | None = None
    """Replaces :attr:`Paths.data_dir`."""

    @field_validator("state_dir", "log_dir", "cache_dir", "data_dir")
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()


class Config(BaseModel):
    """A whole configuration: the bus, the supervisor, the operators and the paths.

    ``[supervisor]`` values for the per-operator settings (see :class:`OperatorDefaults`) are
    applied to every operator table that leaves them out while validating, so each
    :class:`OperatorConfig` in :attr:`operators` holds its effective values.
    """

    model_config = _MODEL_CONFIG

    bus: BusConfig = Field(default_factory=BusConfig)
    """Where the bus is; no ``url`` means the embedded nats-server."""
    prefix: str = DEFAULT_PREFIX
    """Prefix of every subject on the bus."""
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig)
    """The supervisor's settings and the operators' defaults."""
    operators: dict[str, OperatorConfig] = Field(default_factory=dict)
    """The operators, by id."""
    paths: PathsConfig = Field(default_factory=PathsConfig)
    """Overrides of the platform directories; see :meth:`resolved_paths`."""
    source: Path | None = None
    """The file this configuration was loaded from (absolute); none for built-in defaults."""

    @model_validator(mode="before")
    @classmethod
    def _apply_operator_defaults(cls, data: Any) -> Any:
        """Fill each operator table's id from its key and its missing values from [supervisor]."""
        if not isinstance(data, Mapping):
            return data
        operators = data.get("operators")
        if not isinstance(operators, Mapping):
            return data
        inherited = _inheritable_defaults(data.get("supervisor"))
        filled: dict[Any, Any] = {}
        for key, table in operators.items():
            if isinstance(table, OperatorConfig):
                table = {name: getattr(table, name) for name in table.model_fields_set}
            if isinstance(table, Mapping):
                table = {**inherited, "id": key, **table}
            filled[key] = table
        return {**data, "operators": filled}

    @field_validator("prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        try:
            return validate_prefix(value)
        except SubjectError as exc:
            raise PydanticCustomError("eevee_prefix", "{reason}", {"reason": str(exc)}) from None

    @model_validator(mode="after")
    def _ids_match_keys(self) -> Config:
        for key, operator in self.operators.items():
            if operator.id != key:
                raise PydanticCustomError(
                    "eevee_id_mismatch",
                    "operators.{key}: id {op_id!r} differs from the table name; the id is the "
                    "table name, so leave id out",
                    {"key": key, "op_id": operator.id},
                )
        return self

    def resolved_paths(self) -> Paths:
        """The directories to use: :meth:`Paths.default` with ``[paths]`` applied.

        Relative overrides are resolved against the configuration file's directory (the
        working directory for a configuration without :attr:`source`). Overriding
        ``state_dir`` without ``log_dir`` puts the logs in ``state_dir/log``.
        """
        base = self.source.parent if self.source is not None else Path.cwd()
        overrides: dict[str, Path] = {}
        for field in PathsConfig.model_fields:
            value = getattr(self.paths, field)
            if value is not None:
                overrides[field] = base / value
        if "state_dir" in overrides and "log_dir" not in overrides:
            overrides["log_dir"] = overrides["state_dir"] / "log"
        return dataclasses.replace(Paths.default(), **overrides)


def _inheritable_defaults(supervisor: Any) -> dict[str, Any]:
    """The [supervisor] values operators inherit, leaving out invalid ones.

    Invalid values are reported once, under ``supervisor``; copying them into every operator
    would report them again for each.
    """
    if isinstance(supervisor, SupervisorConfig):
        return {name: getattr(supervisor, name) for name in _DEFAULT_KEYS}
    if not isinstance(supervisor, Mapping):
        return {}
    values = {name: value for name, value in supervisor.items() if name in _DEFAULT_KEYS}
    try:
        SupervisorConfig.model_validate(supervisor)
    except ValidationError as exc:
        bad = {err["loc"][0] for err in exc.errors() if err["loc"]}
        if "backoff_max" in bad:  # its check involves backoff_initial: drop the pair
            bad.add("backoff_initial")
        values = {name: value for name, value in values.items() if name not in bad}
    return values


# -- finding and loading -----------------------------------------------------------------------


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
    raw = _read_toml(path, label, problems)
    if raw is None:
        raise ConfigError("invalid configuration", problems=problems)
    file_problems: list[tuple[str, str]] = []  # from operators.d, listed after the main file's
    if "source" in raw:  # a model field, but set from the file's path, never by the file
        del raw["source"]
        problems.append((f"{label}: source", "unknown key"))
    operators = raw.get("operators")
    if isinstance(operators, dict):
        raw["operators"] = {
            key: _merge_operator_file(path.parent, key, table, file_problems)
            for key, table in operators.items()
        }
    config: Config | None = None
    try:
        config = Config.model_validate({**raw, "source": path.resolve()})
    except ValidationError as exc:
        problems.extend(_problem(err, label) for err in exc.errors(include_url=False))
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


def _read_toml(path: Path, label: str, problems: list[tuple[str, str]]) -> dict[str, Any] | None:
    """Parse one TOML file; on failure add a problem located at ``label`` and return None."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        problems.append((label, f"cannot read the file: {exc.strerror or exc}"))
    except UnicodeDecodeError as exc:
        problems.append((label, f"not UTF-8 text: byte {exc.start} cannot be decoded"))
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        if match := _TOML_POSITION_RE.match(message):
            where = f"{label}: line {match['line']}, column {match['col']}"
            message = match["msg"]
        elif match := _TOML_END_RE.match(message):
            where = f"{label}: end of file"
            message = match["msg"]
        else:
            where = label
        problems.append((where, f"TOML syntax error: {message}"))
    return None


def _merge_operator_file(
    config_dir: Path, key: Any, table: Any, problems: list[tuple[str, str]]
) -> Any:
    """Merge ``operators.d/<key>.toml`` under ``table["settings"]``; return the new table."""
    if not isinstance(table, dict) or not isinstance(key, str):
        return table
    try:
        validate_operator_id(key)
    except SubjectError:  # reported by validation; never build a path from a bad id
        return table
    settings_file = config_dir / OPERATORS_DIR / f"{key}.toml"
    if not settings_file.is_file():
        return table
    from_file = _read_toml(settings_file, str(settings_file), problems)
    inline = table.get("settings", {})
    if from_file is None or not isinstance(inline, dict):
        return table
    return {**table, "settings": _deep_merge(from_file, inline)}


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``override``; tables present in both are merged recursively."""
    merged = dict(base)
    for key, value in override.items():
        below = merged.get(key)
        if isinstance(below, Mapping) and isinstance(value, Mapping):
            merged[key] = _deep_merge(below, value)
        else:
            merged[key] = value
    return merged


# -- reporting ---------------------------------------------------------------------------------


def _problem(err: ErrorDetails, label: str) -> tuple[str, str]:
    """Turn one pydantic error into ``("<file>: <key path>", message)``."""
    loc = tuple(err["loc"])
    if len(loc) == 3 and loc[0] == "operators" and loc[2] == "id" and err.get("input") == loc[1]:
        loc = loc[:2]  # the id came from the table name: point at the table
    return problem(label, err, loc=loc, known=_known_keys(loc[:-1]))


def _known_keys(table: tuple[int | str, ...]) -> list[str]:
    """The keys the table at ``table`` accepts, for suggesting a fix to a typo."""
    match table:
        case ():
            model: type[BaseModel] = Config
        case ("bus",):
            model = BusConfig
        case ("supervisor",):
            model = SupervisorConfig
        case ("paths",):
            model = PathsConfig
        case ("operators", _):
            model = OperatorConfig
        case _:
            return []
    return [name for name in model.model_fields if name not in ("source", "id")]
