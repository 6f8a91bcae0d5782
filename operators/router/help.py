"""The router's own command, ``help``, and how commands are written in a room (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Sequence

from eeveepy.protocol.commands import HELP
from eeveepy.protocol.models import ChatMessage

from .permissions import Permissions, identities, in_scope
from .registry import Registry

__all__ = ["help_text", "lead"]


def lead(msg: ChatMessage, prefixes: Sequence[str], names: Sequence[str]) -> str:
    """How a command is written where ``msg`` was said: ``!``, ``eevee: `` or nothing."""
    if msg.private:
        return ""
    return prefixes[0] if prefixes else f"{names[0]}: " if names else ""


def help_text(
    registry: Registry,
    permissions: Permissions,
    msg: ChatMessage,
    text: str,
    prefixes: Sequence[str],
    lead: str,
) -> str:
    """The answer to ``help`` (``text`` is what followed it) said as ``msg``.

    Without an argument: the commands offered there that the user may run. With one: that
    command's usage, help and aliases (and whether the user may run it).
    """
    ids = identities(msg.platform, msg.network, msg.user)
    word = text.split()[0].lower() if text.split() else ""
    for prefix in sorted(prefixes, key=len, reverse=True):
        if prefix and word.startswith(prefix.lower()):
            word = word[len(prefix) :]
            break
    if not word:
        names = [HELP] + [
            reg.name
            for reg in registry.commands()
            if in_scope(reg.scope, msg) and permissions.allowed(reg.name, reg.permission, msg, ids)
        ]
        return f"commands: {', '.join(sorted(names))} (`{lead}{HELP} COMMAND` for details)"
    if word == HELP:
        return f"{lead}{HELP} [COMMAND]: list the commands you may run here, or show one"
    reg = registry.lookup(word)
    if reg is None or not in_scope(reg.scope, msg):
        return f"unknown command `{word}`; try `{lead}{HELP}`"
    out = reg.usage or f"{lead}{reg.name}"
    if reg.help:
        out += f" — {reg.help}"
    if reg.aliases:
        out += f" (aliases: {', '.join(reg.aliases)})"
    if not permissions.allowed(reg.name, reg.permission, msg, ids):
        out += " (you may not run it)"
    return out
