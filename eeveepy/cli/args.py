"""The ``eevee`` command line's parser and argument types: every value checked where it is
parsed, every mistake said on one line (``eevee pub: invalid subject 'a b': contains
whitespace``) with exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from eeveepy.errors import SubjectError
from eeveepy.protocol.subjects import Subjects

__all__ = [
    "Parser",
    "concrete_subject",
    "count",
    "positive_float",
    "subject_pattern",
]

_ANY_PREFIX = Subjects("eevee")
"""Only for checking relative subjects; the real prefix comes from the running system."""


class Parser(argparse.ArgumentParser):
    """argparse, with a one-line error naming the command and where to read more."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: <message> (see `<prog> --help`)`` and exit with status 2."""
        sys.stderr.write(f"{self.prog}: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def positive_float(text: str) -> float:
    """A finite number above zero (seconds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def count(text: str) -> int:
    """A whole number, zero or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def subject_pattern(text: str) -> str:
    """A subject pattern relative to the prefix (``chat.>``, ``log.*.error``)."""
    try:
        _ANY_PREFIX.pattern(text)
    except SubjectError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def concrete_subject(text: str) -> str:
    """A subject relative to the prefix that one can publish on: a pattern without wildcards."""
    subject_pattern(text)
    if any(token in ("*", ">") for token in text.split(".")):
        raise argparse.ArgumentTypeError(
            f"invalid subject {text!r}: wildcards are for `eevee sub`, not for publishing"
        )
    return text
