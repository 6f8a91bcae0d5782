"""The embedded bus's users: who may log in, with which secret, and what each may do.

One user per party: the supervisor and the CLI (no limits) and each operator (``op:<id>``,
limited by :mod:`eeveepy.bus.permissions`). Secrets are random, made for this run, and live in
the supervisor's memory, the operator's environment, (the CLI's) the 0600 state file and the
server's configuration file (0600, in a 0700 directory). A new secret can be made for one
operator (:meth:`BusUsers.rotate`) before it starts again.

The configuration holds the secrets themselves, not bcrypt hashes: whoever can read it (our own
Unix user, or root) can read the state file beside it, whose CLI secret may do everything on
the bus, and every operator's environment in ``/proc`` as well, so a hash kept nothing from
anyone. It cost a bcrypt hash per user in the supervisor and a bcrypt check per connection in
nats-server (≈1.2 ms each at bcrypt's least cost: 0.5 s of CPU for 200 operators' start); the
server compares a plain password in constant time. The block printed for an external server
(:mod:`eeveepy.bus.external`), which its administrator keeps in a configuration of their own,
still holds hashes (:func:`hash_secret`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING

import bcrypt

from eeveepy.bus.natsconf import NatsUser
from eeveepy.bus.permissions import ALL, Permissions, inbox_prefix, operator_permissions

if TYPE_CHECKING:
    from eeveepy.config import OperatorConfig

__all__ = ["CLI_USER", "SUPERVISOR_USER", "BusUsers", "hash_secret", "operator_user"]

SUPERVISOR_USER = "eevee-supervisor"
CLI_USER = "eevee-cli"

# Secrets are 192 random bits: nothing to guess, so a hash needs no work factor beyond
# bcrypt's least (cost 4 keeps each connect fast). nats-server takes a password starting with
# "$2a$" as a bcrypt hash; a plain secret never starts so (token_urlsafe has no "$").
_COST = 4


def _secret() -> str:
    return secrets.token_urlsafe(24)


def hash_secret(secret: str) -> str:
    """The bcrypt hash of ``secret`` as nats-server takes it in place of a password."""
    return bcrypt.hashpw(secret.encode(), bcrypt.gensalt(_COST, prefix=b"2a")).decode()


def operator_user(op_id: str) -> str:
    """The bus user of operator ``op_id``."""
    return f"op:{op_id}"


def permissions_of(cfg: OperatorConfig, prefix: str) -> Permissions:
    """What the operator of table ``cfg`` may do on the bus under ``prefix``."""
    return operator_permissions(
        prefix,
        cfg.id,
        module=cfg.module,
        role=cfg.role,
        settings=cfg.settings,
        publish=cfg.publish,
        subscribe=cfg.subscribe,
    )


class BusUsers:
    """The embedded bus's users and their secrets, made for this run."""

    def __init__(self, prefix: str = "eevee") -> None:
        self.prefix = prefix
        self.supervisor_password = _secret()
        self.cli_password = _secret()
        self._operators: dict[str, str] = {}
        # Each operator's permissions, by its configuration table: a user rotated or added
        # re-renders every user, and most tables have not changed since.
        self._perms: dict[str, tuple[OperatorConfig, Permissions]] = {}

    operator_user = staticmethod(operator_user)

    def password(self, op_id: str) -> str:
        """The secret of operator ``op_id`` (made on first use)."""
        return self._operators.setdefault(op_id, _secret())

    def rotate(self, op_id: str) -> str:
        """Give ``op_id`` a new secret (the server takes it at the next :meth:`users`)."""
        self._operators[op_id] = _secret()
        return self._operators[op_id]

    def restore(self, op_id: str, secret: str) -> None:
        """Give ``op_id`` back ``secret`` (a rotation the server did not take)."""
        self._operators[op_id] = secret

    def forget(self, op_id: str) -> None:
        """Drop ``op_id``'s secret: a later user of that id gets a new one."""
        self._operators.pop(op_id, None)
        self._perms.pop(op_id, None)

    def _user(self, name: str, secret: str, perms: Permissions) -> NatsUser:
        return NatsUser(name, secret, publish=perms.publish, subscribe=perms.subscribe)

    def users(self, operators: Mapping[str, OperatorConfig]) -> list[NatsUser]:
        """The supervisor, the CLI and ``operators``: all the server should know."""
        users = [
            self._user(SUPERVISOR_USER, self.supervisor_password, ALL),
            self._user(CLI_USER, self.cli_password, ALL),
        ]
        users.extend(
            self._user(operator_user(i), self.password(i), self._permissions(cfg))
            for i, cfg in operators.items()
        )
        return users

    def _permissions(self, cfg: OperatorConfig) -> Permissions:
        known = self._perms.get(cfg.id)
        if known is not None and known[0] is cfg:
            return known[1]
        perms = permissions_of(cfg, self.prefix)
        self._perms[cfg.id] = (cfg, perms)
        return perms

    @staticmethod
    def inbox_prefix(op_id: str) -> str:
        """Where operator ``op_id``'s client must put its reply inboxes."""
        return inbox_prefix(op_id)
