"""Saying what is wrong: one ``("<file>: <key path>", message)`` pair per pydantic error."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from eeveepy.bus.client import BusConfig
from eeveepy.config.models import Config, PathsConfig, SupervisorConfig
from eeveepy.config.operators import OperatorConfig

__all__ = ["problem"]

_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_OWN_ERROR_PREFIX = "eevee_"
_MAX_SHOWN_INPUT = 60


def problem(err: ErrorDetails, label: str) -> tuple[str, str]:
    """Turn one pydantic error into ``("<file>: <key path>", message)``."""
    loc = tuple(err["loc"])
    if len(loc) == 3 and loc[0] == "operators" and loc[2] == "id" and err.get("input") == loc[1]:
        loc = loc[:2]  # the id came from the table name: point at the table
    where = f"{label}: {_key_path(loc)}" if loc else label
    if err["type"] == "extra_forbidden":
        message = "unknown key"
        known = _known_keys(loc[:-1])
        if loc and known:
            close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
            if close:
                message += f"; did you mean {close[0]!r}?"
        return where, message
    message = err["msg"]
    value = err.get("input")
    if not err["type"].startswith(_OWN_ERROR_PREFIX) and isinstance(value, str | int | float):
        shown = repr(value)
        if len(shown) > _MAX_SHOWN_INPUT:
            shown = shown[: _MAX_SHOWN_INPUT - 3] + "..."
        message += f" (got {shown})"
    return where, message


def _key_path(loc: Iterable[int | str]) -> str:
    """``("operators", "irc.libera", "command", 0)`` -> ``operators."irc.libera".command[0]``."""
    path = ""
    for item in loc:
        if isinstance(item, int):
            path += f"[{item}]"
            continue
        part = item if _BARE_KEY_RE.fullmatch(item) else json.dumps(item)
        path = f"{path}.{part}" if path else part
    return path


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
