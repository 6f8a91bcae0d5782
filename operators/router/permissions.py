"""Who a chat user is and what they may run (pure: no I/O).

A user's identities (:func:`identities`) are strings such as ``irc:libera:alice`` or
``irc:libera:account:alice``; the router's settings name users by glob patterns on them
(:func:`glob_match`), by group, room or network (:class:`Permissions`). A command's scope says
where it is offered at all (:func:`in_scope`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from eeveepy.protocol.models import ChatMessage, ChatUser, CommandScope

__all__ = [
    "GLOBAL_ID_PLATFORMS",
    "Permissions",
    "Rule",
    "glob_match",
    "identities",
    "in_scope",
]

GLOBAL_ID_PLATFORMS: Final = frozenset({"xmpp", "matrix"})
"""Platforms whose user ids are unique across networks: they also get ``<platform>:<id>``."""


def identities(platform: str, network: str, user: ChatUser) -> list[str]:
    """The identity strings of a chat user, matched by permission patterns.

    - ``<platform>:<network>:<user.id>`` always (``irc:libera:alice``,
      ``matrix:main:@alice:example.org``);
    - ``<platform>:<network>:<user.id>!<user.host>`` when the connector knows the host (IRC
      masks: ``irc:libera:alice!~alice@staff/alice``);
    - ``<platform>:<network>:account:<user.account>`` when the user is authenticated (IRC
      services account, ...);
    - ``<platform>:<user.id>`` for platforms whose ids are unique across networks
      (:data:`GLOBAL_ID_PLATFORMS`: ``xmpp:alice@example.org``, ``matrix:@alice:example.org``).
    """
    base = f"{platform}:{network}:{user.id}"
    out = [base]
    if user.host:
        out.append(f"{base}!{user.host}")
    if user.account:
        out.append(f"{platform}:{network}:account:{user.account}")
    if platform in GLOBAL_ID_PLATFORMS:
        out.append(f"{platform}:{user.id}")
    return out


@functools.lru_cache(maxsize=4096)
def _glob_re(pattern: str) -> re.Pattern[str]:
    parts = []
    for ch in pattern:
        parts.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def glob_match(pattern: str, value: str) -> bool:
    """Shell-style match, case-insensitive: ``*`` is any run, ``?`` one character.

    Unlike :mod:`fnmatch`, ``[`` is an ordinary character (IRC nicks use it).
    """
    return _glob_re(pattern).fullmatch(value) is not None


@dataclass(frozen=True)
class Rule:
    """Who may run a command: every ``deny`` entry refuses, a non-empty ``allow`` must match."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


def in_scope(scope: CommandScope, msg: ChatMessage) -> bool:
    """Whether a command of ``scope`` is offered where ``msg`` was said.

    Each non-empty list must have a matching entry (globs): ``platforms`` the platform,
    ``networks`` the network or ``platform/network``, ``rooms`` the room or
    ``platform/network/room``.
    """
    net = f"{msg.platform}/{msg.network}"
    checks = (
        (scope.platforms, (msg.platform,)),
        (scope.networks, (msg.network, net)),
        (scope.rooms, (msg.room, f"{net}/{msg.room}")),
    )
    for entries, values in checks:
        if entries and not any(glob_match(e, v) for e in entries for v in values):
            return False
    return True


@dataclass
class Permissions:
    """The router's permission settings, applied to chat users.

    Entries of ``admins``, ``ignore``, ``groups`` and rules are identity patterns (globs on
    :func:`identities`), or ``group:<name>``, ``room:<platform>/<network>/<room>`` (globs),
    ``network:<platform>/<network>`` (globs). Admins pass every check.
    """

    admins: Sequence[str] = ()
    groups: Mapping[str, Sequence[str]] = field(default_factory=dict)
    rules: Mapping[str, Rule] = field(default_factory=dict)
    ignore: Sequence[str] = ()

    def ignored(self, msg: ChatMessage, ids: Sequence[str] | None = None) -> bool:
        """Messages of this user are dropped silently."""
        return self._any(self.ignore, msg, ids or identities(msg.platform, msg.network, msg.user))

    def is_admin(self, msg: ChatMessage, ids: Sequence[str] | None = None) -> bool:
        """The user is an admin."""
        return self._any(self.admins, msg, ids or identities(msg.platform, msg.network, msg.user))

    def in_group(self, group: str, msg: ChatMessage, ids: Sequence[str] | None = None) -> bool:
        """The user is in ``group`` (admins are in every group)."""
        ids = ids or identities(msg.platform, msg.network, msg.user)
        return self.is_admin(msg, ids) or self._group(group, msg, ids, set())

    def allowed(
        self,
        command: str,
        permission: str | None,
        msg: ChatMessage,
        ids: Sequence[str] | None = None,
    ) -> bool:
        """Whether the user who sent ``msg`` may run ``command`` there.

        Admins may run everything. Otherwise the rules of ``"*"`` and of ``command`` apply (a
        matching ``deny`` entry refuses; a non-empty ``allow`` needs a matching entry), then the
        registration's ``permission`` group, if any, must contain the user.
        """
        ids = ids or identities(msg.platform, msg.network, msg.user)
        if self.is_admin(msg, ids):
            return True
        for key in ("*", command):
            rule = self.rules.get(key)
            if rule is None:
                continue
            if self._any(rule.deny, msg, ids):
                return False
            if rule.allow and not self._any(rule.allow, msg, ids):
                return False
        return permission is None or self._group(permission, msg, ids, set())

    def _group(self, group: str, msg: ChatMessage, ids: Sequence[str], seen: set[str]) -> bool:
        if group in seen:
            return False
        seen.add(group)
        return any(self._entry(e, msg, ids, seen) for e in self.groups.get(group, ()))

    def _any(self, entries: Iterable[str], msg: ChatMessage, ids: Sequence[str]) -> bool:
        return any(self._entry(e, msg, ids, set()) for e in entries)

    def _entry(self, entry: str, msg: ChatMessage, ids: Sequence[str], seen: set[str]) -> bool:
        kind, _, value = entry.partition(":")
        if kind == "group":
            return self._group(value, msg, ids, seen)
        if kind == "room":
            return glob_match(value, f"{msg.platform}/{msg.network}/{msg.room}")
        if kind == "network":
            return glob_match(value, f"{msg.platform}/{msg.network}")
        return any(glob_match(entry, i) for i in ids)
