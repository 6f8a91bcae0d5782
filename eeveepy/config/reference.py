"""The configuration reference (``docs/configuration.md``), written from the models themselves.

Every key of ``eevee.toml`` is a field of a pydantic model (:class:`~eeveepy.config.models.Config`
and its tables, each operator's settings model); its type, default and the docstring written
under it are all the reference needs, so the reference is generated (``eevee config
reference``) and a test keeps the checked-in copy equal to what the models say.
"""

from __future__ import annotations

import ast
import enum
import inspect
import itertools
import json
import re
import textwrap
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

__all__ = ["Section", "attribute_docs", "core_sections", "markdown", "render", "type_text"]


@dataclass(frozen=True, slots=True)
class Section:
    """One table of the reference: where it sits in ``eevee.toml``, and its model."""

    table: str
    model: type[BaseModel]
    intro: str = ""
    skip: frozenset[str] = field(default_factory=frozenset)


def attribute_docs(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> the docstring written under it, from ``model`` and its bases."""
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def type_text(annotation: Any) -> str:
    """A reader's name for a field's type: ``string``, ``list of string``, ``"drop" | "queue"``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin in (types.UnionType, typing.Union):
        kept = [type_text(arg) for arg in args if arg is not type(None)]
        text = " or ".join(kept)
        return f"{text} (optional)" if len(kept) < len(args) else text
    if origin is typing.Literal:
        return " | ".join(json.dumps(arg) for arg in args)
    if origin in (list, Sequence, tuple, set, frozenset):
        return f"list of {type_text(args[0])}" if args else "list"
    if origin is dict:
        return f"table of {type_text(args[1])}" if args and args[1] is not Any else "table"
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return " | ".join(json.dumps(member.value) for member in annotation)
        if issubclass(annotation, BaseModel):
            return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
        if issubclass(annotation, Path):
            return "path"
        if issubclass(annotation, SecretStr):
            return "string (secret: never logged)"
        names = {str: "string", int: "integer", float: "number", bool: "boolean"}
        return names.get(annotation, annotation.__name__)
    return str(annotation).replace("typing.", "")


def _default_text(info: FieldInfo) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "required"
    try:
        value = info.get_default(call_default_factory=True, validated_data={})
    except TypeError:  # a factory that needs the other fields
        return ""
    if value is None:
        return "none"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, BaseModel):
        return "(its defaults)"
    if isinstance(value, Path):
        value = str(value)
    return f"`{json.dumps(value, default=str)}`"


_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def markdown(text: str) -> str:
    """A docstring's reStructuredText as Markdown: double backquotes single, roles their name."""
    text = _ROLE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    return text.replace("``", "`")


def _cell(text: str) -> str:
    return " ".join(markdown(text).split()).replace("|", "\\|")


def _nested(annotation: Any) -> Iterable[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _nested(arg)


def _table(model: type[BaseModel], skip: frozenset[str], found: list[type[BaseModel]]) -> str:
    docs = attribute_docs(model)
    rows = ["| key | type | default | what it does |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        for inner in _nested(info.annotation):
            if inner not in found:
                found.append(inner)
        what = info.description or docs.get(name, "")
        rows.append(
            f"| `{name}` | {_cell(type_text(info.annotation))} | "
            f"{_cell(_default_text(info))} | {_cell(what)} |"
        )
    return "\n".join(rows)


def render(sections: Sequence[Section], preamble: str) -> str:
    """The reference: ``preamble``, then each section's table, then the nested tables."""
    found: list[type[BaseModel]] = []
    parts = [preamble.rstrip()]
    for section in sections:
        heading = f"`{section.table}`" if section.table.startswith("[") else section.table
        parts.append(f"## {heading}")
        doc = section.intro or inspect.cleandoc(section.model.__doc__ or "")
        if doc:
            parts.append(markdown(doc))
        parts.append(_table(section.model, section.skip, found))
    done = {section.model for section in sections}
    if found:
        parts.append("## Tables used by the keys above")
    for model in found:  # grows while tables are written: nested tables of nested tables
        if model in done:
            continue
        done.add(model)
        parts.append(f"### {model.__name__}")
        doc = inspect.cleandoc(model.__doc__ or "")
        if doc:
            parts.append(markdown(doc))
        parts.append(_table(model, frozenset(), found))
    return "\n\n".join(parts) + "\n"


def core_sections() -> list[Section]:
    """The tables every configuration has: the top level, ``[bus]``, ``[supervisor]``,
    ``[paths]`` and ``[operators.<id>]``."""
    from eeveepy.bus.client import BusConfig
    from eeveepy.config.models import Config, PathsConfig, SupervisorConfig
    from eeveepy.config.operators import OperatorConfig

    return [
        Section(
            "Top level",
            Config,
            "Keys outside any table.",
            frozenset({"bus", "supervisor", "operators", "paths", "source"}),
        ),
        Section("[bus]", BusConfig),
        Section("[supervisor]", SupervisorConfig),
        Section("[paths]", PathsConfig),
        Section("[operators.<id>]", OperatorConfig, skip=frozenset({"id"})),
    ]
