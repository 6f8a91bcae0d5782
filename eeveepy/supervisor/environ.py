"""What the supervisor hands out: an operator's environment and the CLI's state file.

Both depend on the bus: the embedded server gives each operator (and the CLI) a user of its
own; an external one with ``[bus] users_file`` too; any other external bus gives everyone
the configured login (user and password, a ``.creds`` file or an nkey seed). An external
bus's seed URLs and TLS files reach operators and the CLI alike.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from structlog.typing import FilteringBoundLogger

from eeveepy.bus.client import BusConfig
from eeveepy.config import Config, OperatorConfig
from eeveepy.config.verify import settings_origin
from eeveepy.errors import ConfigError
from eeveepy.paths import OperatorPaths
from eeveepy.runtime.contract import (
    ENV_CACHE_DIR,
    ENV_DATA_DIR,
    ENV_INBOX_PREFIX,
    ENV_NATS_CREDS,
    ENV_NATS_NKEY_SEED,
    ENV_NATS_PASSWORD,
    ENV_NATS_TLS_CA,
    ENV_NATS_TLS_CERT,
    ENV_NATS_TLS_KEY,
    ENV_NATS_URL,
    ENV_NATS_USER,
    ENV_OPERATOR_ID,
    ENV_SETTINGS,
    ENV_SETTINGS_FILE,
    ENV_SETTINGS_ORIGIN,
    ENV_SUBJECT_PREFIX,
    ENV_SUPERVISOR,
)
from eeveepy.supervisor.boot import CLI_USER, Bus, BusUsers

__all__ = ["bus_files", "operator_env", "state_of"]

_STATE_BUS_KEYS = ("tls_ca", "tls_cert", "tls_key", "tls_verify", "creds_file", "nkey_seed")
"""The external bus's settings the CLI needs besides a URL and a login (paths, no secrets)."""


def bus_files(bus: BusConfig) -> dict[str, str]:
    """The external bus's TLS files for every operator (absolute paths)."""
    files = {ENV_NATS_TLS_CA: bus.tls_ca, ENV_NATS_TLS_CERT: bus.tls_cert}
    files[ENV_NATS_TLS_KEY] = bus.tls_key
    return {k: str(v.expanduser().resolve()) for k, v in files.items() if v is not None}


def operator_env(
    config: Config,
    cfg: OperatorConfig,
    paths: OperatorPaths,
    *,
    name: str,
    bus: Bus | None,
    users: BusUsers,
    log: FilteringBoundLogger,
) -> dict[str, str]:
    """The ``EEVEE_*`` environment of ``cfg``'s process (see docs/protocol.md)."""
    env = {
        ENV_OPERATOR_ID: cfg.id,
        ENV_NATS_URL: bus.url if bus is not None else "",
        ENV_SUBJECT_PREFIX: config.prefix,
        ENV_SETTINGS: json.dumps(cfg.settings),
        ENV_SETTINGS_FILE: str(paths.settings_file),
        ENV_SETTINGS_ORIGIN: settings_origin(config, cfg),
        ENV_CACHE_DIR: str(paths.cache_dir),
        ENV_DATA_DIR: str(paths.data_dir),
        ENV_SUPERVISOR: name,
        "PYTHONUNBUFFERED": "1",
    }
    if bus is None:
        return env
    if bus.server is not None:
        env[ENV_NATS_USER] = BusUsers.operator_user(cfg.id)
        env[ENV_NATS_PASSWORD] = users.password(cfg.id)
        env[ENV_INBOX_PREFIX] = BusUsers.inbox_prefix(cfg.id)
        return env
    env.update(bus_files(config.bus))
    if bus.users is not None:  # [bus] users_file
        try:
            env[ENV_NATS_PASSWORD] = bus.users.operator(cfg.id)
        except ConfigError as exc:
            log.error("operator without a bus user", operator=cfg.id, error=str(exc))
        else:
            env[ENV_NATS_USER] = BusUsers.operator_user(cfg.id)
            env[ENV_INBOX_PREFIX] = BusUsers.inbox_prefix(cfg.id)
        return env
    if config.bus.user:
        env[ENV_NATS_USER] = config.bus.user
        env[ENV_NATS_PASSWORD] = config.bus.password or ""
    if config.bus.creds_file is not None:
        env[ENV_NATS_CREDS] = str(config.bus.creds_file.expanduser().resolve())
    if config.bus.nkey_seed is not None:
        env[ENV_NATS_NKEY_SEED] = str(config.bus.nkey_seed.expanduser().resolve())
    return env


def state_of(
    config: Config, *, name: str, bus: Bus, users: BusUsers, started: datetime
) -> dict[str, Any]:
    """The state file's content: how the CLI finds this supervisor and logs in to its bus."""
    user: str | None
    password: str | None
    if bus.server is not None:  # the CLI's own user: the embedded server's, or users_file's
        user, password = CLI_USER, users.cli_password
    elif bus.users is not None:
        user, password = CLI_USER, bus.users.cli
    else:
        user, password = config.bus.user, config.bus.password
    state: dict[str, Any] = {
        "supervisor": name,
        "pid": os.getpid(),
        "url": bus.url,
        "user": user,
        "password": password,
        "prefix": config.prefix,
        "config": str(config.source) if config.source else None,
        "started": started.isoformat(),
    }
    if bus.server is None:
        dumped = config.bus.model_dump(include=set(_STATE_BUS_KEYS))
        state["bus"] = {
            k: str(v.expanduser().resolve()) if isinstance(v, Path) else v
            for k, v in dumped.items()
            if v is not None
        }
        if bus.users is not None:  # the CLI logs in as its own user, not with the files
            state["bus"].pop("creds_file", None)
            state["bus"].pop("nkey_seed", None)
    return state
