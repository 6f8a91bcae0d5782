"""``eevee config nats-permissions``: eevee's users and permissions for an external server.

Prints the ``authorization`` block (bcrypt hashes, per-operator permissions) an administrator
installs in the nats-server configuration, and keeps the secrets in ``[bus] users_file`` (made
on first use, kept afterwards; ``--renew`` makes new ones). See :mod:`eeveepy.bus.external`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from eeveepy.errors import ConfigError

__all__ = ["add_parser", "cmd_nats_permissions"]


def add_parser(config_sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``nats-permissions`` to the ``eevee config`` subcommands."""
    perms = config_sub.add_parser(
        "nats-permissions",
        parents=[common],
        help="print eevee's users and permissions for an external nats-server",
    )
    perms.add_argument(
        "--users-file",
        help="where the secrets are kept (default: [bus] users_file of the configuration)",
    )
    perms.add_argument(
        "--renew", action="store_true", help="make new secrets (install the block again)"
    )
    perms.set_defaults(func=cmd_nats_permissions)


def cmd_nats_permissions(args: argparse.Namespace) -> int:
    """Write the users file (when needed) and print the block; 2 on a configuration problem."""
    from eeveepy.bus.external import UsersFile, authorization_block, users_file_path
    from eeveepy.config import find_config, load_config

    try:
        config = load_config(find_config(Path(args.config) if args.config else None))
        path = Path(args.users_file) if args.users_file else users_file_path(config)
        if path is None:
            raise ConfigError(
                "where should the secrets go? set [bus] users_file in the configuration "
                "(the supervisor reads it too), or pass --users-file"
            )
        users = UsersFile() if args.renew or not path.exists() else UsersFile.load(path)
        users.ensure(config.operators)
        users.save(path)
        header = (
            f"# eevee's users on the bus (prefix {config.prefix!r}), for the nats-server\n"
            f"# configuration. Secrets: {path} (give that file to eevee up only).\n"
        )
        sys.stdout.write(authorization_block(config, users, header=header))
    except ConfigError as exc:
        print(f"eevee: {exc}", file=sys.stderr)
        for where, what in exc.problems:
            print(f"  {where}: {what}", file=sys.stderr)
        return 2
    return 0
