"""``eevee new operator NAME``: a new operator project, with a test that passes out of the box.

``eevee new operator greeter --dir ~/src`` creates::

    ~/src/eevee-greeter/
      README.md              how to test it and run it under `eevee up`
      pyproject.toml         `pip install -e .` makes `module = "greeter"` importable anywhere
      greeter/__init__.py
      greeter/__main__.py    `python -m greeter` runs it (what `eevee up` does)
      greeter/operator.py    a command operator: `!greeter [WHO]`, with a settings model
      tests/test_greeter.py  the operator, the router and a chat user on a real bus
                             (:class:`eeveepy.testing.TestBot`)

The project's directory is ``eevee-NAME``, a name Python cannot import: created where
``eevee up`` runs (the top of a checkout, say), a directory named ``NAME`` would be taken for
the package ``NAME`` (an empty namespace package) and hide the real one once installed.

NAME is at once a Python package, an operator id and a command name, so it must be
``[a-z][a-z0-9_]*`` (64 characters at most), not a Python keyword, and must not shadow a module
that is already importable (``json``, ``nats``...). An existing ``DIR/eevee-NAME`` is never
touched. Only the standard library is used here: the templates are plain text.
"""

from __future__ import annotations

import argparse
import importlib.util
import keyword
import re
import shutil
import sys
from pathlib import Path
from string import Template
from typing import Any, Final

from eeveepy.errors import InvalidNameError, ScaffoldError, TargetExistsError

__all__ = [
    "PROJECT_PREFIX",
    "add_new_parser",
    "check_name",
    "cmd_new",
    "new_operator",
]

MAX_NAME: Final = 64
PROJECT_PREFIX: Final = "eevee-"
"""The project directory is ``eevee-NAME``: not importable, so it never shadows ``NAME``."""
_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_]*")
# Names that would clash with eevee itself or the tools the generated project uses.
_RESERVED: Final = frozenset(
    {"eeveepy", "operators", "tests", "test", "help", "nats", "pydantic", "structlog", "pytest"}
)


def check_name(name: str) -> str:
    """``name`` if it can be the package, operator id and command name; else InvalidNameError."""
    if not _NAME_RE.fullmatch(name) or len(name) > MAX_NAME:
        raise InvalidNameError(
            f"invalid operator name {name!r}: use lowercase ASCII letters, digits and '_', "
            f"starting with a letter, {MAX_NAME} characters at most (it is a Python package, "
            "an operator id and a command name)"
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise InvalidNameError(f"invalid operator name {name!r}: it is a Python keyword")
    if name in sys.stdlib_module_names:
        raise InvalidNameError(
            f"invalid operator name {name!r}: it would shadow the standard library module"
        )
    if name in _RESERVED:
        raise InvalidNameError(f"invalid operator name {name!r}: the name is taken by eevee")
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        found = None
    if found is not None:
        where = found.origin or ", ".join(found.submodule_search_locations or []) or "?"
        raise InvalidNameError(
            f"invalid operator name {name!r}: a module of that name is already importable "
            f"({where}); pick another name"
        )
    return name


def new_operator(name: str, directory: Path | str = ".") -> Path:
    """Create the project ``directory/eevee-name``; returns its path.

    Raises :class:`InvalidNameError` or :class:`TargetExistsError` (nothing written then), or
    :class:`ScaffoldError` when writing failed (what was written is removed).
    """
    check_name(name)
    target = Path(directory).expanduser() / f"{PROJECT_PREFIX}{name}"
    if target.exists() or target.is_symlink():
        raise TargetExistsError(f"{target} already exists: not overwriting it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.mkdir()  # fails if it appeared meanwhile: never write into somebody's directory
    except FileExistsError:
        raise TargetExistsError(f"{target} already exists: not overwriting it") from None
    except OSError as exc:
        raise ScaffoldError(f"cannot create {target}: {exc}") from None
    try:
        for relative, template in _FILES.items():
            path = target / Template(relative).substitute(name=name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(Template(template).substitute(name=name), encoding="utf-8")
    except OSError as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise ScaffoldError(f"cannot write {target}: {exc}") from None
    return target


# -- the command line -------------------------------------------------------------------------


def add_new_parser(sub: Any) -> None:
    """Add ``new operator NAME [--dir DIR]`` to the ``eevee`` subcommands ``sub``."""
    new = sub.add_parser("new", help="create a new operator package from a template")
    kinds = new.add_subparsers(dest="new_command", metavar="KIND", required=True)
    op = kinds.add_parser(
        "operator",
        help="a command operator package with a test",
        description="Create DIR/eevee-NAME: a Python package NAME running a command operator,"
        " a test that passes out of the box and a README on running it under `eevee up`.",
    )
    op.add_argument("name", metavar="NAME", help="package, operator id and command name")
    op.add_argument("--dir", default=".", help="where to create it (default: here)")
    op.set_defaults(func=cmd_new)


def cmd_new(args: argparse.Namespace) -> int:
    """``eevee new operator NAME [--dir DIR]``: 0 created, 1 not created, 2 invalid NAME."""
    try:
        target = new_operator(args.name, args.dir)
    except InvalidNameError as exc:
        print(f"eevee: {exc}", file=sys.stderr)
        return 2
    except ScaffoldError as exc:
        print(f"eevee: {exc}", file=sys.stderr)
        return 1
    print(f"created {target}:")
    for path in sorted(p for p in target.rglob("*") if p.is_file()):
        print(f"  {path.relative_to(target)}")
    print(f"next: cd {target} && python -m pytest   (then see README.md)")
    print(f"then: pip install -e {target}   (in the Python environment of `eevee up`)")
    return 0


# -- templates (string.Template: ${name} is the operator name) --------------------------------

_OPERATOR = '''\
"""${name}: an eevee command operator. `!${name} [WHO]` answers with a greeting."""

from __future__ import annotations

from eeveepy import CommandInvocation, Operator
from pydantic import BaseModel, ConfigDict


class Settings(BaseModel):
    """Settings: the `settings = {...}` of its [operators.${name}] table in eevee.toml."""

    model_config = ConfigDict(frozen=True, extra="forbid")  # a typo is an error, not a default

    greeting: str = "Hello"


def create() -> Operator[Settings]:
    """Build the operator; nothing runs until ``run()`` (or ``serve()``)."""
    op = Operator(Settings, name="${name}")

    @op.command(
        "${name}",
        usage="!${name} [WHO]",
        help="Greet WHO, or whoever asks.",
        pattern=r"(?P<who>\\S+)?",
    )
    async def greet(inv: CommandInvocation) -> str:
        who = inv.args.get("who") or inv.message.user.name
        return f"{op.settings.greeting}, {who}!"  # the reply, sent where the command was said

    return op


def main() -> None:
    """Run the operator as a process."""
    create().run()
'''

_INIT = '''\
"""${name}: an eevee operator (see README.md)."""

from ${name}.operator import Settings, create, main

__all__ = ["Settings", "create", "main"]
'''

_MAIN = '''\
"""`python -m ${name}` runs the operator (that is what `eevee up` does)."""

from ${name}.operator import main

if __name__ == "__main__":
    main()
'''

_TEST = '''\
"""The ${name} operator on a real bus: a nats-server, the router, the operator and a chat user
(eeveepy.testing.TestBot), as under `eevee up` but for the chat platform."""

from __future__ import annotations

import asyncio

from eeveepy.testing import TestBot

from ${name}.operator import create


async def conversation() -> None:
    async with TestBot(create(), settings={"greeting": "Hi"}) as bot:
        assert await bot.ask("!${name} bob") == "Hi, bob!"
        assert await bot.ask("!${name}", user="carol") == "Hi, carol!"
        assert await bot.say("just chatting", wait=0.5) == []  # not a command: no answer


def test_${name}_answers_its_command() -> None:
    asyncio.run(conversation())
'''

_README = """\
# ${name}

An eevee operator: `!${name} [WHO]` answers `Hello, WHO!` (or greets
whoever asked). Start from here: the code is in `${name}/operator.py`.

```
${name}/operator.py    the operator: a settings model and one command
${name}/__main__.py    `python -m ${name}` runs it
tests/test_${name}.py  the operator, the router and a chat user on a real bus (TestBot)
pyproject.toml         `pip install -e .`; pytest and ruff settings
```

## Test

From this directory, with eeveepy installed in the same Python environment:

```sh
python -m pytest          # pyproject.toml puts this directory on the import path
```

`eeveepy.testing.TestBot` starts a nats-server, eevee's router and this operator, and lets the
test talk as a chat user: `await bot.ask("!${name} bob")` is the one answer, `await
bot.say(...)` every answer (none: `[]`).

## Run it under `eevee up`

`module = "${name}"` must be importable by the Python that runs `eevee up`. Install this
project into that environment:

```sh
pip install -e .
```

(or, without installing, give the operator its import path in its table:
`env = { PYTHONPATH = "/path/to/eevee-${name}" }`). A running `eevee up` sees a package
installed after it started: operators started from then on come from a renewed fork server.

Then add a table to your `eevee.toml`, next to the router (which turns `!${name}` chat lines
into command invocations):

```toml
[operators.router]
module = "operators.router"

[operators.${name}]
module = "${name}"
settings = { greeting = "Hello" }
```

and check it, then apply it to the running bot:

```sh
eevee config check     # imports ${name} and validates its settings, as a start would
eevee reload           # re-reads eevee.toml: prints what it adds, changes, and does
```

`eevee ps ${name}` shows it running; `eevee logs -o ${name}` shows its logs. After editing
its `settings`, `eevee reload` applies them (the operator re-reads them on SIGHUP; `eevee ctl
reload ${name}` only resends the settings already loaded).

## Run it alone (development)

Against a nats-server of your own (`nats-server -js`):

```sh
python -m ${name} --id ${name} --nats-url nats://127.0.0.1:4222 --settings settings.toml
```
"""

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "eevee-${name}"
version = "0.1.0"
description = "An eevee operator."
requires-python = ">=3.11"
# It needs eeveepy: install it into the same environment as eevee itself.
dependencies = []

[tool.setuptools]
packages = ["${name}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["."]
asyncio_default_fixture_loop_scope = "function"  # for pytest-asyncio, if installed

[tool.ruff]
line-length = 100
target-version = "py311"

[tool.ruff.lint]
select = ["E", "F", "W", "I", "B", "UP", "SIM", "RUF"]
"""

_FILES: Final = {
    "README.md": _README,
    "pyproject.toml": _PYPROJECT,
    "${name}/__init__.py": _INIT,
    "${name}/__main__.py": _MAIN,
    "${name}/operator.py": _OPERATOR,
    "tests/test_${name}.py": _TEST,
}
