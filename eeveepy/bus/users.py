"""The embedded bus's users: who may log in, with which secret, and what each may do.

One user per party: the supervisor and the CLI (no limits) and each operator (``op:<id>``,
limited by :mod:`eeveepy.bus.permissions`). Secrets are random, made for this run, and only
their bcrypt hashes go into the server's configuration file: the plaintext lives in the
supervisor's memory, the operator's environment and (the CLI's) the 0600 state file.
A new secret can be made for one operator (:meth:`BusUsers.rotate`) before it starts again.
"""

from __future__ import annotations

import asyncio
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

# Secrets are 192 random bits: nothing to guess, so the hash needs no work factor beyond
# bcrypt's least (cost 4 keeps each connect and each rendering fast). nats-server takes a
# password starting with "$2a$" as a bcrypt hash.
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
        self._hashes: dict[str, str] = {}
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

    def _hash(self, secret: str) -> str:
        known = self._hashes.get(secret)
        if known is None:
            if len(self._hashes) > 4096:  # rotated secrets: keep the cache bounded
                self._hashes.clear()
            known = self._hashes[secret] = hash_secret(secret)
        return known

    async def prepare(self, operators: Mapping[str, OperatorConfig], threads: int = 4) -> None:
        """Hash ahead, in ``threads`` threads (bcrypt lets go of the GIL), the secrets
        :meth:`users` needs: one after the other on the event loop, 200 operators' took 0.6 s
        of the supervisor's start."""
        todo = [self.supervisor_password, self.cli_password]
        todo += [self.password(op_id) for op_id in operators]
        todo = [secret for secret in dict.fromkeys(todo) if secret not in self._hashes]

        def hash_all(batch: list[str]) -> list[str]:
            return [hash_secret(secret) for secret in batch]

        batches = [todo[i::threads] for i in range(threads)]
        done = await asyncio.gather(*(asyncio.to_thread(hash_all, b) for b in batches if b))
        for batch, hashes in zip((b for b in batches if b), done, strict=True):
            self._hashes.update(zip(batch, hashes, strict=True))

    def _user(self, name: str, secret: str, perms: Permissions) -> NatsUser:
        return NatsUser(name, self._hash(secret), publish=perms.publish, subscribe=perms.subscribe)

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
