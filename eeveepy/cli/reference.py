"""``eevee config reference``: every configuration key, with its type, default and meaning.

The text is ``docs/configuration.md``; ``--check FILE`` fails when a file is no longer what
the models say (the test suite runs it on the checked-in copy).
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

__all__ = ["PREAMBLE", "add_parser", "cmd_reference", "reference_text"]

PREAMBLE = """\
# Configuration reference

Every key `eevee.toml` accepts, generated from the models that validate it (`eevee config
reference` prints this page; `make schemas` writes it). For where the file is looked for, the
default operators and commented examples, see `config/eevee.toml`; `eevee config check` lists
every problem of a configuration at once, by file and key. Unknown keys are errors.

Durations are in seconds. A `[supervisor]` value of `restart`, `start_timeout`, `stop_timeout`,
`ping_interval`, `ping_timeout`, `max_missed_pings`, `max_restarts`, `restart_window`,
`backoff_initial`, `backoff_max`, `healthy_after` or `nice` is the default of every operator
table that leaves it out. An operator's `settings` may also come from `operators.d/<id>.toml`
beside the configuration file (the whole file is the settings table); the inline `settings`
win key by key."""


def reference_text() -> str:
    """The whole reference: the core tables, then each first-party operator's settings."""
    from eeveepy.config.reference import Section, core_sections, render
    from operators.catalog import settings_models

    sections = core_sections()
    for module, model in settings_models():
        intro = f'`module = "{module}"`: {inspect.cleandoc(model.__doc__ or "")}'
        sections.append(Section(f"[operators.<id>.settings] of {module}", model, intro.strip()))
    return render(sections, PREAMBLE)


def add_parser(config_sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``reference`` to the ``eevee config`` subcommands."""
    ref = config_sub.add_parser(
        "reference", parents=[common], help="print every configuration key (Markdown)"
    )
    ref.add_argument("--out", help="write it to this file instead of printing it")
    ref.add_argument(
        "--check", metavar="FILE", help="exit 1 if FILE differs from what the models say"
    )
    ref.set_defaults(func=cmd_reference)


def cmd_reference(args: argparse.Namespace) -> int:
    """Print, write or check the reference; 1 when ``--check`` finds the file stale."""
    text = reference_text()
    if args.check:
        path = Path(args.check)
        have = path.read_text(encoding="utf-8") if path.is_file() else None
        if have != text:
            what = "is missing" if have is None else "differs from the models"
            print(f"eevee: {path} {what}; write it with `make schemas`", file=sys.stderr)
            return 1
        return 0
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        return 0
    sys.stdout.write(text)
    return 0
