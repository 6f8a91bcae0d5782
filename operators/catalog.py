"""The first-party operators' settings models, by module: what ``docs/configuration.md``
documents under ``[operators.<id>.settings]``.

Only names are kept here; :func:`settings_models` imports the models when asked, so nothing
is imported with this module.
"""

from __future__ import annotations

import importlib

from pydantic import BaseModel

__all__ = ["SETTINGS", "settings_models"]

SETTINGS: tuple[tuple[str, str], ...] = (
    ("operators.router", "operators.router.settings:RouterSettings"),
    ("operators.irc", "operators.irc.settings:IrcSettings"),
    ("operators.xmpp", "operators.xmpp.settings:XmppSettings"),
    ("operators.matrix", "operators.matrix.settings:MatrixSettings"),
    ("operators.logging", "operators.logging.settings:LoggingSettings"),
    ("operators.console", "eeveepy.console:ConsoleSettings"),
    ("operators.seen", "operators.seen:SeenSettings"),
    ("operators.karma", "operators.karma:KarmaSettings"),
    ("operators.admin", "operators.admin:AdminSettings"),
    ("operators.crpc", "operators.crpc.settings:CrpcSettings"),
    ("operators.crpc.server", "operators.crpc.server.settings:ServerSettings"),
)
"""(module an operator table names, ``package.module:Model`` of its settings)."""


def settings_models() -> list[tuple[str, type[BaseModel]]]:
    """``(module, settings model)`` of every first-party operator that has settings."""
    models = []
    for module, where in SETTINGS:
        path, _, name = where.partition(":")
        model = getattr(importlib.import_module(path), name)
        models.append((module, model))
    return models
