"""docs/configuration.md: generated from the models, complete, and in step with them."""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from eeveepy.cli.reference import cmd_reference, reference_text
from eeveepy.config.models import SupervisorConfig
from eeveepy.config.operators import OperatorConfig
from eeveepy.config.reference import Section, attribute_docs, markdown, render, type_text
from eeveepy.config.roles import Role
from operators.catalog import SETTINGS, settings_models

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"


def _args(**kw: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"out": None, "check": None, **kw})


def test_the_checked_in_reference_is_what_the_models_say() -> None:
    assert cmd_reference(_args(check=str(DOC))) == 0, "run `make schemas`"


def test_a_stale_or_missing_reference_fails_the_check_and_says_how_to_fix_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(DOC.read_text(encoding="utf-8").replace("`5.0`", "`6.0`", 1))
    assert cmd_reference(_args(check=str(stale))) == 1
    assert "differs from the models" in capsys.readouterr().err
    assert cmd_reference(_args(check=str(tmp_path / "none.md"))) == 1
    assert "is missing; write it with `make schemas`" in capsys.readouterr().err


def test_out_writes_the_same_text_as_printed(tmp_path: Path) -> None:
    out = tmp_path / "ref.md"
    assert cmd_reference(_args(out=str(out))) == 0
    assert out.read_text(encoding="utf-8") == reference_text()


def _rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows.append(cells)
    return rows


def test_every_key_has_a_type_a_default_and_a_description() -> None:
    rows = _rows(reference_text())
    assert len(rows) > 150
    undocumented = [row[0] for row in rows if not all(row)]
    assert undocumented == []


def test_every_first_party_settings_model_is_in_the_reference() -> None:
    text = reference_text()
    documented = {model for _, model in settings_models()}
    missing = []
    for path in sorted((ROOT / "operators").rglob("*.py")):
        if "node_modules" in path.parts:
            continue
        source = path.read_text(encoding="utf-8")
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for name in re.findall(r"^class (\w+Settings)\(BaseModel\):", source, re.M):
            model = getattr(importlib.import_module(module.removesuffix(".__init__")), name)
            if not model.model_fields:
                continue  # nothing to configure (echo)
            if model not in documented and f"### {name}\n" not in text:
                missing.append(f"{module}.{name}")
    assert missing == [], "add them to operators/catalog.py"
    assert len(SETTINGS) == len({module for module, _ in SETTINGS})


def test_inherited_keys_keep_the_docstring_of_the_class_that_declares_them() -> None:
    docs = attribute_docs(OperatorConfig)
    assert docs["nice"].startswith("The niceness the operator's process runs at")
    assert docs["module"].startswith("A Python module")
    assert "lease_ttl" in attribute_docs(SupervisorConfig)


class _Inner(BaseModel):
    """An inner table with ``code``."""

    depth: int = 1
    """How deep."""


class _Outer(BaseModel):
    """The outer table; see :class:`~a.b.Inner`."""

    mode: Literal["a", "b"] = "a"
    """The mode | with a pipe."""
    role: Role | None = None
    inner: _Inner = Field(default_factory=_Inner)
    many: dict[str, list[_Inner]] = Field(default_factory=dict, description="Given as a field.")
    when: Annotated[float, Field(gt=0)] = 2.0
    """Seconds, with a constraint."""
    needed: str


def test_types_defaults_docs_and_nested_tables_render_for_a_reader() -> None:
    text = render([Section("[outer]", _Outer)], "# Title")
    assert text.startswith("# Title\n\n## `[outer]`\n\nThe outer table; see `Inner`.")
    rows = {row[0]: row[1:] for row in _rows(text)}
    assert rows["`mode`"] == ['"a" \\| "b"', '`"a"`', "The mode \\| with a pipe."]
    assert rows["`role`"][0].startswith('"connector" \\| "command"')
    assert rows["`role`"][0].endswith("(optional)")
    assert rows["`inner`"][:2] == ["[_Inner](#_inner)", "(its defaults)"]
    assert rows["`many`"] == ["table of list of [_Inner](#_inner)", "`{}`", "Given as a field."]
    assert rows["`when`"] == ["number", "`2.0`", "Seconds, with a constraint."]
    assert rows["`needed`"][:2] == ["string", "required"]
    assert text.count("### _Inner\n") == 1
    assert "An inner table with `code`." in text
    assert rows["`depth`"] == ["integer", "`1`", "How deep."]


def test_markdown_of_docstring_markup() -> None:
    assert markdown("``x`` and :meth:`Config.resolved_paths`") == "`x` and `resolved_paths`"
    assert markdown(":class:`~eeveepy.bus.Once`") == "`Once`"
    assert type_text(list[str]) == "list of string"
    assert type_text(Path | None) == "path (optional)"
