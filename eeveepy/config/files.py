"""Reading one TOML file of the configuration, a failure turned into a located problem."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["read_toml"]

_TOML_POSITION_RE = re.compile(r"^(?P<msg>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")
_TOML_END_RE = re.compile(r"^(?P<msg>.*) \(at end of document\)$")


def read_toml(path: Path, label: str, problems: list[tuple[str, str]]) -> dict[str, Any] | None:
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
