"""``operators.d/<id>.toml``: an operator's settings in a file of their own, merged under the
inline ``settings`` of its table (inline keys win, tables merge key by key)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eeveepy.config.files import read_toml
from eeveepy.errors import SubjectError
from eeveepy.protocol.subjects import validate_operator_id

__all__ = ["OPERATORS_DIR", "deep_merge", "merge_operator_file"]

OPERATORS_DIR = "operators.d"
"""Directory next to the configuration file holding ``<operator id>.toml`` settings files."""


def merge_operator_file(
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
    from_file = read_toml(settings_file, str(settings_file), problems)
    inline = table.get("settings", {})
    if from_file is None or not isinstance(inline, dict):
        return table
    return {**table, "settings": deep_merge(from_file, inline)}


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``override``; tables present in both are merged recursively."""
    merged = dict(base)
    for key, value in override.items():
        below = merged.get(key)
        if isinstance(below, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(below, value)
        else:
            merged[key] = value
    return merged
