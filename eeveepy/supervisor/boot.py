"""The supervisor's bus: the embedded nats-server (or a configured one), its users, the streams.

With no ``[bus] url`` the supervisor starts its own nats-server (restarted by the bus watch
when it dies) and gives it one user per party: itself, the CLI, and each operator id
(``op:<id>``, limited to what its role needs: :mod:`eeveepy.bus.permissions`), each with a
random password made for this run (:mod:`eeveepy.bus.users`). A configured bus is used with
the configured credentials. Either way the log history stream and the chat streams are made
sure of; without them the supervisor still runs, and says what is missing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from nats.aio.client import Client as NatsClient
from structlog.typing import FilteringBoundLogger

from eeveepy.bus.client import BusConfig, connect
from eeveepy.bus.external import UsersFile, users_file_path
from eeveepy.bus.ipc import Ipc
from eeveepy.bus.natsserver import EmbeddedNats
from eeveepy.bus.streams import ensure_chat_streams
from eeveepy.bus.users import CLI_USER, SUPERVISOR_USER, BusUsers
from eeveepy.config import Config
from eeveepy.errors import BusError
from eeveepy.logs import ensure_log_stream
from eeveepy.protocol.subjects import Subjects
from eeveepy.supervisor.buswatch import BusWatch

__all__ = ["CLI_USER", "SUPERVISOR_USER", "Bus", "BusUsers", "start_bus"]


@dataclass
class Bus:
    """The supervisor's bus once started."""

    url: str
    """What operators and the CLI connect to."""
    nc: NatsClient
    """The supervisor's own connection."""
    ipc: Ipc
    """The supervisor's envelopes on ``nc``."""
    server: EmbeddedNats | None
    """The embedded server, or None for a configured bus."""
    users: UsersFile | None = None
    """A configured bus's eevee users (``[bus] users_file``), or None."""


async def start_bus(
    config: Config,
    *,
    name: str,
    store_dir: Path,
    users: BusUsers,
    watch: BusWatch,
    on_reconnect: Callable[[], Awaitable[None]],
    log: FilteringBoundLogger,
) -> Bus:
    """Start the embedded server in ``store_dir`` (or take the configured one), connect, make
    sure of the streams. ``watch`` follows the connection (and the embedded server)."""
    server: EmbeddedNats | None = None
    external: UsersFile | None = None
    if config.bus.url is None:
        server = EmbeddedNats(
            store_dir=store_dir,
            users=users.users(config.operators),
            max_payload=config.bus.max_payload,
        )
        await server.start()
        url = server.url
        watch.server = server
        watch.start()
        nc = await connect(
            BusConfig(),
            name=f"supervisor:{name}",
            url=url,
            user=SUPERVISOR_USER,
            password=users.supervisor_password,
            on_disconnect=watch.disconnected,
            on_reconnect=on_reconnect,
        )
    else:
        url = ",".join(config.bus.seeds)  # (operators get every seed too)
        external = _users_file(config)
        nc = await connect(
            config.bus,
            name=f"supervisor:{name}",
            user=SUPERVISOR_USER if external else None,
            password=external.supervisor if external else None,
            on_disconnect=watch.disconnected,
            on_reconnect=on_reconnect,
        )
    ipc = Ipc(Subjects(config.prefix), "supervisor", logger=log)
    await ipc.attach(nc)
    await _ensure_streams(nc, config, log)
    watch.keep_streams(nc.jetstream(), config)  # ensured again once JetStream is back
    return Bus(url=url, nc=nc, ipc=ipc, server=server, users=external)


def _users_file(config: Config) -> UsersFile | None:
    """The external bus's ``[bus] users_file`` (see :mod:`eeveepy.bus.external`), if set."""
    path = users_file_path(config)
    return UsersFile.load(path) if path is not None else None


async def _ensure_streams(nc: NatsClient, config: Config, log: FilteringBoundLogger) -> None:
    sup = config.supervisor
    try:
        await ensure_log_stream(
            nc.jetstream(),
            config.prefix,
            max_age=sup.log_history_max_age,
            max_bytes=sup.log_history_max_bytes,
            replicas=config.bus.replicas,
        )
    except BusError as exc:
        log.warning("no log history on the bus", error=str(exc))
    try:
        await ensure_chat_streams(nc.jetstream(), config.prefix, replicas=config.bus.replicas)
    except BusError as exc:
        log.warning("chat is not stored: messages may be lost", error=str(exc))
