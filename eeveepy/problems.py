"""Pydantic validation errors as eeveepy reports them: one ``(where, what)`` pair per problem.

:class:`~eeveepy.errors.ConfigError` carries such pairs; the configuration loader, the
operator runtime's settings and the command API all report through this module, so a wrong
value reads the same wherever it was written::

    config/eevee.toml: operators.echo.restart: Input should be 'always', ... (got 'sometimes')
    EEVEE_SETTINGS: channels[0]: Input should be a valid string (got 3)
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Sequence
from typing import Final

from pydantic import ValidationError
from pydantic_core import ErrorDetails

__all__ = ["OWN_ERROR_PREFIX", "Problem", "key_path", "problem", "problems", "summary"]

Problem = tuple[str, str]
"""``(where, what)``: where names the source and the key path, what says what is wrong."""

OWN_ERROR_PREFIX: Final = "eevee_"
"""Error types of eeveepy's own validators (``PydanticCustomError("eevee_...")``): their
message already says what was wrong with the value, so it is not repeated."""

_BARE_KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]+")
_MAX_SHOWN_INPUT: Final = 60


def key_path(loc: Iterable[int | str]) -> str:
    """``("operators", "irc.libera", "command", 0)`` -> ``operators."irc.libera".command[0]``.

    Keys that are not bare TOML keys are quoted, so the path can be pasted into a TOML file.
    """
    path = ""
    for item in loc:
        if isinstance(item, int):
            path += f"[{item}]"
            continue
        part = item if _BARE_KEY_RE.fullmatch(item) else json.dumps(item)
        path = f"{path}.{part}" if path else part
    return path


def problem(
    label: str,
    err: ErrorDetails,
    *,
    loc: Sequence[int | str] | None = None,
    known: Sequence[str] = (),
) -> Problem:
    """One pydantic error as ``("<label>: <key path>", message)``.

    ``loc`` replaces the error's own location; ``known`` are the keys the enclosing table
    accepts, to suggest a fix when the error is an unknown key.
    """
    where_in = tuple(err["loc"]) if loc is None else tuple(loc)
    where = f"{label}: {key_path(where_in)}" if where_in else label
    if err["type"] == "extra_forbidden":
        message = "unknown key"
        if where_in and known:
            close = difflib.get_close_matches(str(where_in[-1]), known, n=1, cutoff=0.6)
            if close:
                message += f"; did you mean {close[0]!r}?"
        return where, message
    message = err["msg"]
    value = err.get("input")
    if not err["type"].startswith(OWN_ERROR_PREFIX) and isinstance(value, str | int | float):
        shown = repr(value)
        if len(shown) > _MAX_SHOWN_INPUT:
            shown = shown[: _MAX_SHOWN_INPUT - 3] + "..."
        message += f" (got {shown})"
    return where, message


def problems(exc: ValidationError, label: str) -> list[Problem]:
    """Every error of ``exc`` as a :data:`Problem` under ``label``."""
    return [problem(label, err) for err in exc.errors(include_url=False)]


def summary(exc: ValidationError, *, limit: int | None = None, whole: str = "(top level)") -> str:
    """``exc`` on one line: ``name: String should match pattern ...; ...``.

    At most ``limit`` errors (then ``and N more``); ``whole`` stands for an error of the whole
    object rather than of one field.
    """
    errors = exc.errors(include_url=False)
    shown = errors if limit is None else errors[:limit]
    parts = [f"{'.'.join(str(p) for p in err['loc']) or whole}: {err['msg']}" for err in shown]
    if len(errors) > len(shown):
        parts.append(f"and {len(errors) - len(shown)} more")
    return "; ".join(parts)
