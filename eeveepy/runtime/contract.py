"""The process contract between a supervisor and an operator, in any language.

One place for what both sides must agree on: the ``EEVEE_*`` environment variables an
operator is started with, and the exit codes by which it tells the supervisor why it ended.
The supervisor (:mod:`eeveepy.supervisor`) writes the environment; :class:`Launch` reads and
validates it on the operator's side, after :func:`environ_with_options` has applied the
command-line options of a development run. ``docs/protocol.md`` ("The process contract") describes
the same for authors in other languages.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from eeveepy.bus.client import BusConfig
from eeveepy.errors import ConfigError, SubjectError
from eeveepy.paths import Paths
from eeveepy.protocol.subjects import DEFAULT_PREFIX, validate_operator_id, validate_prefix

__all__ = [
    "ENV_CACHE_DIR",
    "ENV_CHECK",
    "ENV_CONNECT_TIMEOUT",
    "ENV_DATA_DIR",
    "ENV_INBOX_PREFIX",
    "ENV_NATS_CREDS",
    "ENV_NATS_NKEY_SEED",
    "ENV_NATS_PASSWORD",
    "ENV_NATS_TLS_CA",
    "ENV_NATS_TLS_CERT",
    "ENV_NATS_TLS_KEY",
    "ENV_NATS_URL",
    "ENV_NATS_USER",
    "ENV_OPERATOR_ID",
    "ENV_SETTINGS",
    "ENV_SETTINGS_FILE",
    "ENV_SETTINGS_ORIGIN",
    "ENV_SUBJECT_PREFIX",
    "ENV_SUPERVISOR",
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "Launch",
    "environ_with_options",
]

EXIT_OK: Final = 0
"""A graceful stop."""
EXIT_FAILURE: Final = 1
"""A crash (an ``on_start`` hook raised, ...) or a forced stop."""
EXIT_UNAVAILABLE: Final = 69
"""EX_UNAVAILABLE: the bus could not be reached at start."""
EXIT_CONFIG: Final = 78
"""EX_CONFIG: the launch environment or the settings are invalid; restarting will not help."""

ENV_OPERATOR_ID: Final = "EEVEE_OPERATOR_ID"
"""The operator id (``name`` or ``name.instance``)."""
ENV_NATS_URL: Final = "EEVEE_NATS_URL"
"""The bus URL; a cluster's seed URLs comma-separated (``nats://a:4222,nats://b:4222``)."""
ENV_NATS_TLS_CA: Final = "EEVEE_NATS_TLS_CA"
"""A CA file to verify the bus's TLS certificate with (absent: the system's CAs)."""
ENV_NATS_TLS_CERT: Final = "EEVEE_NATS_TLS_CERT"
"""A client certificate for the bus (mutual TLS); its key is :data:`ENV_NATS_TLS_KEY`."""
ENV_NATS_TLS_KEY: Final = "EEVEE_NATS_TLS_KEY"
"""The key of :data:`ENV_NATS_TLS_CERT`."""
ENV_NATS_CREDS: Final = "EEVEE_NATS_CREDS"
"""A NATS ``.creds`` file (JWT and nkey) to log in with, instead of a user and password."""
ENV_NATS_NKEY_SEED: Final = "EEVEE_NATS_NKEY_SEED"
"""A file holding an nkey seed to log in with, instead of a user and password."""
_FILE_VARS: Final = (
    ENV_NATS_TLS_CA,
    ENV_NATS_TLS_CERT,
    ENV_NATS_TLS_KEY,
    ENV_NATS_CREDS,
    ENV_NATS_NKEY_SEED,
)
ENV_NATS_USER: Final = "EEVEE_NATS_USER"
"""The operator's own bus user (absent: no authentication)."""
ENV_NATS_PASSWORD: Final = "EEVEE_NATS_PASSWORD"
"""The password of :data:`ENV_NATS_USER`."""
ENV_INBOX_PREFIX: Final = "EEVEE_INBOX_PREFIX"
"""Where the operator's reply inboxes go (its client's inbox prefix; default ``_INBOX``): on
the embedded bus the operator may only receive on ``<prefix>.>``."""
ENV_SUBJECT_PREFIX: Final = "EEVEE_SUBJECT_PREFIX"
"""The subject prefix (default ``eevee``)."""
ENV_SETTINGS: Final = "EEVEE_SETTINGS"
"""The operator's settings as a JSON object."""
ENV_SETTINGS_FILE: Final = "EEVEE_SETTINGS_FILE"
"""A JSON or TOML file of settings, re-read at each reload; wins over :data:`ENV_SETTINGS`."""
ENV_SETTINGS_ORIGIN: Final = "EEVEE_SETTINGS_ORIGIN"
"""Where the settings were written, for error messages: a JSON object ``{"file": ...,
"key": [...]}`` (``config/eevee.toml`` and ``["operators", "echo", "settings"]``), and
``"also"``, an ``operators.d`` file merged under them. Problems then name that file and key
instead of the settings file the supervisor generated from it."""
ENV_CHECK: Final = "EEVEE_CHECK"
"""Set (to ``1``) by ``eevee config check``: validate the settings, print the problems as one
JSON line ``{"problems": [[where, what], ...]}`` on stdout and exit (0, or 78 when invalid),
without connecting to the bus."""
ENV_CACHE_DIR: Final = "EEVEE_CACHE_DIR"
"""A directory for caches, emptied (and created) by the supervisor before each start."""
ENV_DATA_DIR: Final = "EEVEE_DATA_DIR"
"""A directory for data kept across restarts."""
ENV_SUPERVISOR: Final = "EEVEE_SUPERVISOR"
"""The supervisor's name; set only under a supervisor."""
ENV_CONNECT_TIMEOUT: Final = "EEVEE_CONNECT_TIMEOUT"
"""Seconds to wait for the bus at start (default 5)."""

DEFAULT_CONNECT_TIMEOUT: Final = 5.0


@dataclass(frozen=True)
class Launch:
    """What the process contract's environment says, validated.

    Build it with :meth:`from_env`; :meth:`Operator.run <eeveepy.runtime.operator.Operator.run>`'s
    command-line options are applied to the environment before that.
    """

    operator_id: str
    nats_url: str
    user: str | None
    password: str | None
    prefix: str
    inbox_prefix: str | None
    settings_json: str
    settings_file: Path | None
    cache_dir: Path
    data_dir: Path
    supervisor: str | None
    connect_timeout: float
    settings_origin: str | None = None
    """:data:`ENV_SETTINGS_ORIGIN` as given (JSON), or None."""
    bus_files: Mapping[str, Path] = field(default_factory=dict)
    """The TLS and login files given (``EEVEE_NATS_TLS_CA``... -> path)."""

    def bus_config(self) -> BusConfig:
        """How to connect: the timeout, TLS and login files of the environment."""
        files = self.bus_files
        return BusConfig(
            connect_timeout=self.connect_timeout,
            tls_ca=files.get(ENV_NATS_TLS_CA),
            tls_cert=files.get(ENV_NATS_TLS_CERT),
            tls_key=files.get(ENV_NATS_TLS_KEY),
            creds_file=files.get(ENV_NATS_CREDS),
            nkey_seed=files.get(ENV_NATS_NKEY_SEED),
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str], default_id: str | None = None) -> Launch:
        """Read the ``EEVEE_*`` variables; raise :class:`ConfigError` listing every problem.

        ``default_id`` is the operator id when :data:`ENV_OPERATOR_ID` is not set.
        """
        problems: list[tuple[str, str]] = []
        op_id = env.get(ENV_OPERATOR_ID) or default_id or ""
        if not op_id:
            problems.append((ENV_OPERATOR_ID, "not set (or pass --id)"))
        else:
            try:
                validate_operator_id(op_id)
            except SubjectError as exc:
                problems.append((ENV_OPERATOR_ID, str(exc)))
        url = env.get(ENV_NATS_URL, "")
        if not url:
            problems.append((ENV_NATS_URL, "not set (or pass --nats-url)"))
        prefix = env.get(ENV_SUBJECT_PREFIX) or DEFAULT_PREFIX
        try:
            validate_prefix(prefix)
        except SubjectError as exc:
            problems.append((ENV_SUBJECT_PREFIX, str(exc)))
        timeout = DEFAULT_CONNECT_TIMEOUT
        raw_timeout = env.get(ENV_CONNECT_TIMEOUT)
        if raw_timeout:
            try:
                timeout = float(raw_timeout)
                if not 0 < timeout < float("inf"):
                    raise ValueError
            except ValueError:
                problems.append((ENV_CONNECT_TIMEOUT, f"not a positive number: {raw_timeout!r}"))
        if problems:
            raise ConfigError("invalid operator environment", problems)
        cache = env.get(ENV_CACHE_DIR)
        data = env.get(ENV_DATA_DIR)
        if cache and data:  # under `eevee up`: platformdirs' code not run (fewer pages copied)
            cache_dir, data_dir = Path(cache), Path(data)
        else:
            defaults = Paths.default()  # platformdirs only computes paths: cheap
            cache_dir = Path(cache) if cache else defaults.operator_cache_dir(op_id)
            data_dir = Path(data) if data else defaults.operator_data_dir(op_id)
        settings_file = env.get(ENV_SETTINGS_FILE)
        return cls(
            operator_id=op_id,
            nats_url=url,
            user=env.get(ENV_NATS_USER) or None,
            password=env.get(ENV_NATS_PASSWORD),
            prefix=prefix,
            inbox_prefix=env.get(ENV_INBOX_PREFIX) or None,
            settings_json=env.get(ENV_SETTINGS) or "{}",
            settings_file=Path(settings_file) if settings_file else None,
            cache_dir=cache_dir,
            data_dir=data_dir,
            supervisor=env.get(ENV_SUPERVISOR) or None,
            connect_timeout=timeout,
            settings_origin=env.get(ENV_SETTINGS_ORIGIN) or None,
            bus_files={name: Path(env[name]) for name in _FILE_VARS if env.get(name)},
        )


def environ_with_options(
    environ: Mapping[str, str], argv: list[str] | None, *, prog: str | None = None
) -> dict[str, str]:
    """``environ`` with the command-line options of a development run applied over it.

    ``--id``, ``--nats-url``, ``--prefix`` and ``--settings FILE`` stand for their ``EEVEE_*``
    variables; ``argv`` None reads ``sys.argv``. A bad option exits with argparse's usage
    message (status 2), as a command line should.
    """
    if not (sys.argv[1:] if argv is None else argv):
        # Under `eevee up`: no options, so argparse's code is not run (a forked operator
        # copies every page of the fork server that the code it runs touches).
        return dict(environ)
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run this eevee operator. Under `eevee up` everything comes from the "
        "environment (EEVEE_*); these options override it for development runs.",
    )
    parser.add_argument("--id", help=f"operator id ({ENV_OPERATOR_ID})")
    parser.add_argument("--nats-url", help=f"bus URL ({ENV_NATS_URL})")
    parser.add_argument("--prefix", help=f"subject prefix ({ENV_SUBJECT_PREFIX})")
    parser.add_argument(
        "--settings", metavar="FILE", help=f"settings file, .json or .toml ({ENV_SETTINGS_FILE})"
    )
    args = parser.parse_args(argv)
    if args.settings and not Path(args.settings).is_file():
        parser.error(f"--settings: no such file: {args.settings}")
    env = dict(environ)
    if args.id:
        env[ENV_OPERATOR_ID] = args.id
    if args.nats_url:
        env[ENV_NATS_URL] = args.nats_url
    if args.prefix:
        env[ENV_SUBJECT_PREFIX] = args.prefix
    if args.settings:
        env[ENV_SETTINGS_FILE] = str(Path(args.settings).resolve())
    return env
