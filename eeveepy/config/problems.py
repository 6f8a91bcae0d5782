"""Saying what is wrong: one ``("<file>: <key path>", message)`` pair per pydantic error,
worded by :mod:`eeveepy.problems` (as for operator settings), with the configuration's own
knowledge: which keys a table accepts, and where an operator's id came from."""

from __future__ import annotations

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from eeveepy import problems
from eeveepy.bus.client import BusConfig
from eeveepy.config.models import Config, PathsConfig, SupervisorConfig
from eeveepy.config.operators import OperatorConfig

__all__ = ["problem"]


def problem(err: ErrorDetails, label: str) -> tuple[str, str]:
    """Turn one pydantic error into ``("<file>: <key path>", message)``."""
    loc = tuple(err["loc"])
    if len(loc) == 3 and loc[0] == "operators" and loc[2] == "id" and err.get("input") == loc[1]:
        loc = loc[:2]  # the id came from the table name: point at the table
    return problems.problem(label, err, loc=loc, known=_known_keys(loc[:-1]))


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
