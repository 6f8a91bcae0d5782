"""``eevee new operator NAME``: a new operator package, with a test that passes out of the box.

``eevee new operator greeter --dir ~/src`` creates::

    ~/src/greeter/
      README.md              how to test it and run it under `eevee up`
      pyproject.toml         `pip install -e .` makes `module = "greeter"` importable anywhere
      greeter/__init__.py
      greeter/__main__.py    `python -m greeter` runs it (what `eevee up` does)
      greeter/operator.py    a command operator: `!greeter [WHO]`, with a settings model
      tests/test_greeter.py  starts a nats-server, serves the operator in-process and runs
                             its command through the bus as the router would

NAME is at once a Python package, an operator id and a command name, so it must be
``[a-z][a-z0-9_]*`` (64 characters at most), not a Python keyword, and must not shadow a module
that is already importable (``json``, ``nats``...). An existing ``DIR/NAME`` is never touched.
Only the standard library is used here: the templates are plain text.
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
    "add_new_parser",
    "check_name",
    "cmd_new",
    "new_operator",
]

MAX_NAME: Final = 64
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
    """Create the package ``directory/name``; returns its path.

    Raises :class:`InvalidNameError` or :class:`TargetExistsError` (nothing written then), or
    :class:`ScaffoldError` when writing failed (what was written is removed).
    """
    check_name(name)
    target = Path(directory).expanduser() / name
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
        description="Create DIR/NAME: a Python package running a command operator, a test "
        "that passes out of the box and a README on running it under `eevee up`.",
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
"""The ${name} operator on a real bus: an embedded nats-server, the operator served in-process,
and its command invoked through the bus as the router would do it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from eeveepy import ChatMessage, ChatUser, CommandInvocation, OutgoingMessage
from eeveepy.bus.client import BusConfig, barrier, connect
from eeveepy.bus.ipc import Ipc
from eeveepy.bus.natsserver import EmbeddedNats
from eeveepy.protocol.models import CommandResult, Ready
from eeveepy.protocol.subjects import Subjects
from eeveepy.runtime.contract import (
    ENV_CACHE_DIR,
    ENV_DATA_DIR,
    ENV_NATS_URL,
    ENV_OPERATOR_ID,
    ENV_SETTINGS,
    ENV_SUBJECT_PREFIX,
)

from ${name}.operator import create

PREFIX = "test"
ID = "${name}"


def invocation(args: dict[str, str]) -> CommandInvocation:
    """What the router sends for `!${name} ...` said by alice in #room."""
    message = ChatMessage(
        platform="test",
        network="local",
        room="#room",
        user=ChatUser(id="alice", name="alice"),
        text="!${name}",
        message_id="m1",
    )
    return CommandInvocation(command="${name}", args=args, message=message)


async def scenario(tmp: Path) -> None:
    async with EmbeddedNats(store_dir=tmp / "nats") as server:
        subjects = Subjects(PREFIX)
        bus = Ipc(subjects, "test")  # the test plays the router and the chat connector
        await bus.attach(await connect(BusConfig(url=server.url), name="test"))
        ready: asyncio.Queue[Ready] = asyncio.Queue()
        replies: asyncio.Queue[OutgoingMessage] = asyncio.Queue()

        async def on_ready(msg: Ready) -> None:
            await ready.put(msg)

        async def on_reply(msg: OutgoingMessage) -> None:
            await replies.put(msg)

        await bus.subscribe(subjects.operator_ready(ID), on_ready)
        await bus.subscribe("chat.out.>", on_reply)
        await barrier(bus.nc)

        op = create()
        environ = {  # what `eevee up` gives an operator
            ENV_OPERATOR_ID: ID,
            ENV_NATS_URL: server.url,
            ENV_SUBJECT_PREFIX: PREFIX,
            ENV_SETTINGS: json.dumps({"greeting": "Hi"}),
            ENV_CACHE_DIR: str(tmp / "cache"),
            ENV_DATA_DIR: str(tmp / "data"),
        }
        serving = asyncio.create_task(op.serve(environ))
        try:
            await asyncio.wait_for(ready.get(), 10)
            for args, expected in (({"who": "bob"}, "Hi, bob!"), ({}, "Hi, alice!")):
                result = await bus.request(
                    subjects.command_run("${name}"), invocation(args), CommandResult, timeout=5
                )
                assert result.body.ok, result.body.message
                reply = await asyncio.wait_for(replies.get(), 5)
                assert (reply.text, reply.target, reply.reply_to) == (expected, "#room", "m1")
        finally:
            op.request_stop()
            code = await asyncio.wait_for(serving, 10)
            nc = bus.nc
            await bus.detach()
            await nc.close()
        assert code == 0


def test_${name}_answers_its_command(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path))
'''

_README = """\
# ${name}

An eevee operator: `!${name} [WHO]` answers `Hello, WHO!` (or greets
whoever asked). Start from here: the code is in `${name}/operator.py`.

```
${name}/operator.py    the operator: a settings model and one command
${name}/__main__.py    `python -m ${name}` runs it
tests/test_${name}.py  starts a nats-server, serves the operator and runs its command
pyproject.toml         `pip install -e .`; pytest and ruff settings
```

## Test

From this directory, with eeveepy installed in the same Python environment:

```sh
python -m pytest          # pyproject.toml puts this directory on the import path
```

## Run it under `eevee up`

Add a table to your `eevee.toml`, next to the router (which turns `!${name}` chat lines into
command invocations):

```toml
[operators.router]
module = "operators.router"

[operators.${name}]
module = "${name}"
settings = { greeting = "Hello" }
```

`module = "${name}"` must be importable by the Python that runs `eevee up`: either install
this package into that environment (`pip install -e .`), or start `eevee up` from this
directory (`eevee up -c /path/to/eevee.toml`). An `env = { PYTHONPATH = "..." }` in the table
is not enough while the supervisor starts module operators from its fork server (the default,
`[supervisor] forkserver = true`): they inherit the fork server's import path.

`eevee ps` shows it running; `eevee logs -o ${name}` shows its logs; `eevee ctl reload ${name}`
applies new settings.

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
name = "${name}"
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
