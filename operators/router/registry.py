"""The router's table of accepted command registrations (pure: no I/O).

:class:`~operators.router.registrations.Registrar` fills it from the bus and the key-value
bucket; the chat path looks commands up in it by name or alias.
"""

from __future__ import annotations

import re
from typing import Any

from eeveepy.protocol.models import CommandRegistration

__all__ = ["Registry"]


def _definition(reg: CommandRegistration) -> dict[str, Any]:
    return reg.model_dump(exclude={"operator"})


def _words(reg: CommandRegistration) -> set[str]:
    return {reg.name, *reg.aliases}


class Registry:
    """The router's table of accepted registrations, keyed by (name, operator).

    Several operators may register the same name with the same definition: they are replicas
    sharing the queue group. Any other overlap of names and aliases is a clash.
    """

    def __init__(self) -> None:
        self._regs: dict[tuple[str, str], CommandRegistration] = {}
        self._index: dict[str, str] = {}  # name or alias -> name
        self._patterns: dict[str, re.Pattern[str] | None] = {}

    def __len__(self) -> int:
        return len(self._regs)

    def get(self, name: str, operator: str) -> CommandRegistration | None:
        """The registration of ``name`` by ``operator``, if accepted."""
        return self._regs.get((name, operator))

    def conflicts(self, reg: CommandRegistration) -> list[CommandRegistration]:
        """Accepted registrations that ``reg`` would clash with (replicas do not clash)."""
        words = _words(reg)
        mine = _definition(reg)
        out = []
        for key, other in self._regs.items():
            if key == (reg.name, reg.operator) or not words & _words(other):
                continue
            if other.name == reg.name and _definition(other) == mine:
                continue  # a replica
            out.append(other)
        return out

    def add(self, reg: CommandRegistration) -> bool:
        """Accept ``reg`` (check :meth:`conflicts` first); False when it was already there."""
        key = (reg.name, reg.operator)
        if self._regs.get(key) == reg:
            return False
        self._regs[key] = reg
        self._reindex()
        return True

    def remove(self, name: str, operator: str) -> bool:
        """Forget the registration of ``name`` by ``operator``."""
        if self._regs.pop((name, operator), None) is None:
            return False
        self._reindex()
        return True

    def lookup(self, word: str) -> CommandRegistration | None:
        """The command ``word`` names (a name or an alias), one of its replicas."""
        name = self._index.get(word)
        if name is None:
            return None
        for (n, _), reg in self._regs.items():
            if n == name:
                return reg
        return None  # pragma: no cover - the index follows the table

    def commands(self) -> list[CommandRegistration]:
        """One registration per command name, sorted by name."""
        seen: dict[str, CommandRegistration] = {}
        for (name, _), reg in sorted(self._regs.items()):
            seen.setdefault(name, reg)
        return list(seen.values())

    def operators(self, name: str) -> list[str]:
        """The operators serving ``name``."""
        return sorted(op for (n, op) in self._regs if n == name)

    def pattern(self, name: str) -> re.Pattern[str] | None:
        """The compiled ``pattern`` of the command ``name``."""
        return self._patterns.get(name)

    def _reindex(self) -> None:
        self._index = {}
        self._patterns = {}
        for (name, _), reg in sorted(self._regs.items()):
            for word in _words(reg):
                self._index.setdefault(word, name)
            if name not in self._patterns:
                self._patterns[name] = re.compile(reg.pattern) if reg.pattern else None
