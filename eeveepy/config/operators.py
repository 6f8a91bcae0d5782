"""The per-operator tables: ``[operators.<id>]`` and the defaults ``[supervisor]`` gives them."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from eeveepy.config.roles import Role, default_role
from eeveepy.errors import ConfigError, SubjectError
from eeveepy.protocol.subjects import Subjects, validate_operator_id

__all__ = [
    "DEFAULT_KEYS",
    "MODEL_CONFIG",
    "OperatorConfig",
    "OperatorDefaults",
    "RestartPolicy",
    "Seconds",
]

Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
"""A finite, positive duration in seconds."""

MODEL_CONFIG = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)
"""Every configuration table: immutable, unknown keys refused, attribute docstrings kept."""


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

    model_config = MODEL_CONFIG

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
    nice: int = Field(default=0, ge=0, le=19, strict=True)
    """The niceness the operator's process runs at (0: as the supervisor; 19: the lowest
    priority), set when it is spawned: an operator off the answering path (seen, karma,
    logging) yields the cores to the ones on it when the machine is busy. Never less nice than
    the supervisor itself."""

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


DEFAULT_KEYS = frozenset(OperatorDefaults.model_fields)
"""The names of the settings every operator table inherits from ``[supervisor]``."""


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
    enabled: bool = Field(default=True, strict=True)
    """False keeps the operator configured but not started (a TOML boolean: ``"yes"`` is a
    mistake, not a yes)."""
    role: Role | None = None
    """The permission set the operator gets on the bus; none: its module's default
    (see :mod:`eeveepy.config.roles`)."""
    publish: list[str] = Field(default_factory=list)
    """More subjects (patterns under the prefix, e.g. ``"supervisor.status"``) it may publish."""
    subscribe: list[str] = Field(default_factory=list)
    """More subjects (patterns under the prefix, e.g. ``"test.bash.>"``) it may subscribe to."""
    settings: dict[str, Any] = Field(default_factory=dict)
    """Operator-specific settings, merged over ``operators.d/<id>.toml``."""
    hosts: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    """The supervisors (``[supervisor] name``) that may run it, one at a time; empty: any.
    Every other supervisor sharing the bus leaves it alone."""

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

    @field_validator("publish", "subscribe")
    @classmethod
    def _valid_patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                Subjects().pattern(pattern)
            except SubjectError as exc:
                raise PydanticCustomError(
                    "eevee_subject_pattern",
                    '{reason} (give subjects under the prefix, without it: "chat.out.>")',
                    {"reason": str(exc)},
                ) from None
        return value

    @property
    def effective_role(self) -> Role:
        """``role``, or the default of the module (``command`` for executables)."""
        return self.role if self.role is not None else default_role(self.module)

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
