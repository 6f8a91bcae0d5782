"""Per-operator users on an external NATS server, installed by its administrator.

The embedded server gets its users from the supervisor at every start. A server run by
someone else cannot be reconfigured by eevee, so ``eevee config nats-permissions`` prints the
same users and permissions as a nats-server ``authorization`` block for its administrator to
install, and keeps their secrets in the ``[bus] users_file`` (mode 0600, JSON): with that file
the supervisor logs in as ``eevee-supervisor`` and gives each operator its own user, as with
the embedded server. The block holds only bcrypt hashes; the file holds the secrets, made once
and kept (``--renew`` makes new ones, to be installed again).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from eeveepy.bus.natsconf import NatsUser, render_authorization, write_private
from eeveepy.bus.permissions import ALL
from eeveepy.bus.users import (
    CLI_USER,
    SUPERVISOR_USER,
    hash_secret,
    operator_user,
    permissions_of,
)
from eeveepy.config import Config
from eeveepy.errors import ConfigError

__all__ = ["UsersFile", "authorization_block", "users_file_path"]


def _secret() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class UsersFile:
    """The secrets of an external bus's eevee users: the supervisor, the CLI, each operator."""

    supervisor: str = field(default_factory=_secret)
    cli: str = field(default_factory=_secret)
    operators: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> UsersFile:
        """Read ``path``; :class:`ConfigError` when it is missing or broken."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                supervisor=str(data["supervisor"]),
                cli=str(data["cli"]),
                operators={str(k): str(v) for k, v in dict(data["operators"]).items()},
            )
        except FileNotFoundError:
            raise ConfigError(
                f"[bus] users_file {path} does not exist: make it with "
                "`eevee config nats-permissions` and install the users it prints"
            ) from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"[bus] users_file {path} is unreadable: {exc}") from None

    def save(self, path: Path) -> None:
        """Write the secrets to ``path`` (mode 0600)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"supervisor": self.supervisor, "cli": self.cli, "operators": self.operators}
        write_private(path, json.dumps(data, indent=2) + "\n")

    def ensure(self, operator_ids: Iterable[str]) -> None:
        """Make a secret for each operator that has none."""
        for op_id in operator_ids:
            self.operators.setdefault(op_id, _secret())

    def operator(self, op_id: str) -> str:
        """The secret of ``op_id``; :class:`ConfigError` when the file has none."""
        try:
            return self.operators[op_id]
        except KeyError:
            raise ConfigError(
                f"[bus] users_file has no user for operator {op_id!r}: run `eevee config "
                "nats-permissions` again and install the users it prints"
            ) from None


def users_file_path(config: Config) -> Path | None:
    """``[bus] users_file``, relative to the configuration file's directory; None if unset."""
    path = config.bus.users_file
    if path is None:
        return None
    path = path.expanduser()
    base = config.source.parent if config.source is not None else Path.cwd()
    return path if path.is_absolute() else base / path


def authorization_block(config: Config, users: UsersFile, *, header: str = "") -> str:
    """The nats-server ``authorization`` block for ``config``'s operators with ``users``."""
    entries = [
        NatsUser(SUPERVISOR_USER, hash_secret(users.supervisor), ALL.publish, ALL.subscribe),
        NatsUser(CLI_USER, hash_secret(users.cli), ALL.publish, ALL.subscribe),
    ]
    for op_id, cfg in config.operators.items():
        perms = permissions_of(cfg, config.prefix)
        secret = hash_secret(users.operator(op_id))
        entries.append(NatsUser(operator_user(op_id), secret, perms.publish, perms.subscribe))
    return header + render_authorization(entries) + "\n"
