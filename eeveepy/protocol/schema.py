"""JSON Schemas of every envelope kind, generated from the models (``eevee schema``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eeveepy.protocol.models import BODY_MODELS, Envelope


def schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema: one per body kind (its envelope), plus the bare envelope."""
    out: dict[str, dict[str, Any]] = {}
    generic = Envelope[dict[str, Any]].model_json_schema()
    generic["title"] = "Envelope"
    generic["$id"] = "envelope.schema.json"
    out["envelope.schema.json"] = generic
    for model in BODY_MODELS:
        schema = Envelope[model].model_json_schema()  # type: ignore[valid-type]
        schema["title"] = f"Envelope of {model.KIND}"
        schema["$id"] = f"{model.KIND}.schema.json"
        schema["properties"]["kind"] = {
            "const": model.KIND,
            "description": "The body's kind.",
            "title": "Kind",
            "type": "string",
        }
        out[f"{model.KIND}.schema.json"] = schema
    return out


def render(schema: dict[str, Any]) -> str:
    """Stable text of a schema (sorted keys, two-space indent, newline at the end)."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(directory: Path) -> list[Path]:
    """Write every schema into ``directory``; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


def drift(directory: Path) -> list[str]:
    """Names of schema files that are missing, stale or unknown in ``directory``."""
    expected = {name: render(schema) for name, schema in schemas().items()}
    problems = []
    for name, text in expected.items():
        path = directory / name
        if not path.exists():
            problems.append(f"{name}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{name}: differs from the models")
    for path in sorted(directory.glob("*.schema.json")):
        if path.name not in expected:
            problems.append(f"{path.name}: no model produces it")
    return problems
