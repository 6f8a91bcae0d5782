"""The rules of the command protocol that both of its sides apply.

A command operator checks its own registrations with :func:`check_registration` when they are
declared (so a mistake fails at start, in the author's process), and the router checks every
registration it receives with the same function before it accepts one (see "Registration" in
docs/protocol.md). :func:`run_queue` names the queue group the replicas of a command share.
"""

from __future__ import annotations

import re
from typing import Final

from eeveepy.protocol.models import CommandRegistration

__all__ = ["HELP", "MAX_PATTERN_LENGTH", "check_registration", "run_queue"]

HELP: Final = "help"
"""The router's own command: reserved, no operator may register it."""

MAX_PATTERN_LENGTH: Final = 1000
"""Longest ``pattern`` a registration may carry."""

_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]*")


def run_queue(name: str) -> str:
    """The queue group of ``command.run.<name>``: ``cmd.<name>``."""
    return f"cmd.{name}"


def check_registration(reg: CommandRegistration) -> str:
    """What is wrong with a (schema-valid) registration beyond its schema; "" when nothing."""
    if reg.name == HELP:
        return f"`{HELP}` is the router's own command"
    for alias in reg.aliases:
        if not _NAME_RE.fullmatch(alias) or len(alias) > 64:
            return f"invalid alias {alias!r}: must match [a-z0-9][a-z0-9_-]*, 64 characters at most"
        if alias == HELP:
            return f"alias `{HELP}` is the router's own command"
    if reg.pattern is not None:
        if len(reg.pattern) > MAX_PATTERN_LENGTH:
            return f"pattern is longer than {MAX_PATTERN_LENGTH} characters"
        try:
            re.compile(reg.pattern)
        except re.error as exc:
            return f"invalid pattern {reg.pattern!r}: {exc}"
    if reg.permission is not None and not reg.permission:
        return "permission must name a group (or be null)"
    return ""
