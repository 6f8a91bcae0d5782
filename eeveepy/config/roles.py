"""Operator roles: which permission set on the bus an operator gets, and the defaults.

An operator's ``role`` says what it does, and the bus permissions follow from it
(:mod:`eeveepy.bus.permissions` turns a role into subject allow-lists):

- ``connector``: publishes chat input and events of its own platform and network; receives
  its network's ``chat.out`` and ``chat.ctl``.
- ``command``: publishes ``command.register`` and ``chat.out`` (replies); receives
  ``command.run``, ``command.sync``, chat input and events.
- ``router``: publishes ``command.run``, ``command.sync``, ``command.rejected``, ``chat.out``
  and pings; receives registrations, chat input and events.
- ``logging``: receives every log record; asks ``supervisor.status``.
- ``custom``: only what every operator needs, plus the table's ``publish`` and ``subscribe``.

Without ``role`` in its table an operator gets the default of its module (:func:`default_role`):
the first-party router, logging and connector modules their own role, every other module and
every ``command = [...]`` executable ``command``. A first-party module may come with extra
subjects too (:func:`default_extras`): the admin operator asks the supervisor; the ChatOps
RPC operator says chat lines of the ``crpc`` platform and reads their answers and the
command registrations.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "CONNECTOR_MODULES",
    "Role",
    "connector_network",
    "connector_platform",
    "default_extras",
    "default_role",
]


class Role(StrEnum):
    """The permission set of an operator on the bus."""

    CONNECTOR = "connector"
    """A chat connector: its own platform and network only."""
    COMMAND = "command"
    """A command operator: registers commands, runs them, replies in chat."""
    ROUTER = "router"
    """The command router: dispatches commands, answers in chat."""
    LOGGING = "logging"
    """A log store: reads every operator's log records."""
    CUSTOM = "custom"
    """Only the operator's own subjects, plus the extra subjects of its table."""


CONNECTOR_MODULES: Final = {
    "operators.irc": "irc",
    "operators.xmpp": "xmpp",
    "operators.matrix": "matrix",
    "operators.console": "console",
}
"""The first-party connector modules and their platforms."""

_MODULE_ROLES: Final = {"operators.router": Role.ROUTER, "operators.logging": Role.LOGGING}

_MODULE_EXTRAS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    # !ps and !restart ask the supervisor, as `eevee ps` and `eevee ctl` do.
    "operators.admin": (("supervisor.status", "supervisor.ctl"), ()),
    # The ChatOps RPC server says calls as users of its own platform, crpc, and reads the
    # answers; it lists the commands from their registrations (asking for them at start).
    "operators.crpc": (
        ("chat.in.crpc.>", "command.sync"),
        ("chat.out.crpc.>", "command.register", "command.register.>", "command.rejected.>"),
    ),
}


def default_role(module: str | None) -> Role:
    """The role of an operator whose table sets none: from its ``module`` (None: a command)."""
    if module in CONNECTOR_MODULES:
        return Role.CONNECTOR
    return _MODULE_ROLES.get(module or "", Role.COMMAND)


def default_extras(module: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(publish, subscribe)`` subjects a first-party module needs beyond its default role."""
    return _MODULE_EXTRAS.get(module or "", ((), ()))


def connector_platform(module: str | None, operator_id: str) -> str:
    """The platform of a connector: its module's (``operators.irc`` -> ``irc``), else the
    operator id's first part (``slack.work`` -> ``slack``)."""
    return CONNECTOR_MODULES.get(module or "") or operator_id.split(".", 1)[0]


def connector_network(operator_id: str, platform: str, settings: Mapping[str, Any]) -> str:
    """The network a connector serves, by the kit's rule: its ``network`` setting, else the id
    after ``<platform>.``, else what the platform falls back to (the IRC host, the XMPP
    account, the Matrix user id's server, the console's ``local``); ``""`` when none of these
    says."""
    setting = settings.get("network")
    if isinstance(setting, str) and setting:
        return setting
    if platform == "console":  # the console's network is its setting alone
        return "local"
    head = f"{platform}."
    if operator_id.startswith(head) and len(operator_id) > len(head):
        return operator_id[len(head) :]
    fallback = settings.get({"irc": "host", "xmpp": "jid", "matrix": "user_id"}.get(platform, ""))
    if not isinstance(fallback, str):
        return ""
    if platform == "xmpp":  # the account's bare JID
        return fallback.partition("/")[0]
    if platform == "matrix":  # the server of the bot's user id
        return fallback.partition(":")[2]
    return fallback
