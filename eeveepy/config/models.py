"""The whole configuration: ``Config`` with its ``[supervisor]`` and ``[paths]`` tables."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from eeveepy.bus.client import BusConfig
from eeveepy.bus.names import kv_bucket_name, leases_bucket_name
from eeveepy.config.operators import (
    DEFAULT_KEYS,
    MODEL_CONFIG,
    OperatorConfig,
    OperatorDefaults,
    Seconds,
)
from eeveepy.config.roles import Role, connector_network, connector_platform
from eeveepy.errors import SubjectError
from eeveepy.paths import Paths
from eeveepy.protocol.subjects import DEFAULT_PREFIX, validate_prefix

__all__ = ["Config", "PathsConfig", "SupervisorConfig"]


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
        strict=True,
        default=True,
        description="Start `module` operators by forking a preloaded Python process.",
    )
    """Start ``module`` operators from a preloaded fork server (much faster, less memory)."""


class PathsConfig(BaseModel):
    """The ``[paths]`` table: directories that replace the platform defaults.

    ``~`` is expanded here; relative paths are resolved against the configuration file's
    directory by :meth:`Config.resolved_paths`.
    """

    model_config = MODEL_CONFIG

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

    model_config = MODEL_CONFIG

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

    @model_validator(mode="after")
    def _own_buckets_and_networks(self) -> Config:
        """Each operator's key-value bucket is its own, and each connector knows its network:
        the bus permissions are derived from both."""
        owners: dict[str, str] = {leases_bucket_name(self.prefix): "the supervisors' leases"}
        for op_id, operator in self.operators.items():
            bucket = kv_bucket_name(op_id, self.prefix)
            other = owners.setdefault(bucket, f"operator {op_id!r}")
            if other != f"operator {op_id!r}":
                raise PydanticCustomError(
                    "eevee_bucket_clash",
                    "operators.{key}: its key-value bucket {bucket!r} would be that of {other}; "
                    "rename the operator",
                    {"key": op_id, "bucket": bucket, "other": other},
                )
            if operator.effective_role is Role.CONNECTOR:
                platform = connector_platform(operator.module, op_id)
                if not connector_network(op_id, platform, operator.settings):
                    raise PydanticCustomError(
                        "eevee_connector_network",
                        "operators.{key}: a connector's network is needed for its bus "
                        "permissions; set settings.network, or name it {platform}.<network>",
                        {"key": op_id, "platform": platform},
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
        return {name: getattr(supervisor, name) for name in DEFAULT_KEYS}
    if not isinstance(supervisor, Mapping):
        return {}
    values = {name: value for name, value in supervisor.items() if name in DEFAULT_KEYS}
    try:
        SupervisorConfig.model_validate(supervisor)
    except ValidationError as exc:
        bad = {err["loc"][0] for err in exc.errors() if err["loc"]}
        if "backoff_max" in bad:  # its check involves backoff_initial: drop the pair
            bad.add("backoff_initial")
        values = {name: value for name, value in values.items() if name not in bad}
    return values
