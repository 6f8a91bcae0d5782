"""What each user of the bus may publish and subscribe to: the broker-enforced sandbox.

The embedded nats-server gives every operator its own user (``op:<id>``) with the subject
allow-lists this module computes from the operator's role (:class:`~eeveepy.config.roles.Role`)
and ids; ``eevee config nats-permissions`` prints the same for an external server. The
supervisor and the CLI may do everything.

Every operator may (:func:`base_permissions`):

- publish its own ``operator.ready.<id>`` and ``log.<level>.<id>``, dead letters
  (``dlq.>``), and answer requests it received (``allow_responses``: one reply per request);
- subscribe to its own ``operator.ping.<id>`` and ``operator.ctl.<id>``, and to its own
  reply inbox ``_INBOX.<id token>.>`` (:func:`inbox_prefix`; the client must use it as its
  inbox prefix, ``EEVEE_INBOX_PREFIX``), so no operator reads another's replies;
- use its own key-value bucket (``eevee_<id>``, made by the supervisor: whoever makes a
  stream chooses what it captures) and nothing else of JetStream, except
  looking up which stream stores a subject (``$JS.API.STREAM.NAMES``) and ``$JS.API.INFO``.

Roles add (:func:`role_permissions`) what ``eeveepy/config/roles.py`` tabulates, each with the
durable consumer it keeps on a stream (the router on the chat input, a connector its outbox on
the chat output, the logging operator on the log history). Only the supervisor publishes
``operator.*.ctl``, ``operator.*.ping``, ``supervisor.*`` answers and the leases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from eeveepy.bus.names import (
    chat_in_stream_name,
    chat_out_stream_name,
    deliver_subject,
    kv_bucket_name,
    log_stream_name,
    outbox_consumer_name,
)
from eeveepy.config.roles import (
    Role,
    connector_network,
    connector_platform,
    default_extras,
    default_role,
)
from eeveepy.protocol.subjects import Subjects, encode_token, validate_operator_id

__all__ = [
    "INBOX_ROOT",
    "LOGGING_DURABLE",
    "ROUTER_DURABLE",
    "Permissions",
    "base_permissions",
    "consumer_subjects",
    "inbox_prefix",
    "kv_subjects",
    "operator_permissions",
    "role_permissions",
]

INBOX_ROOT = "_INBOX"
"""Where reply inboxes live; each operator has its own subtree."""
ROUTER_DURABLE = "router"
"""The router's durable consumer on the chat input stream."""
LOGGING_DURABLE = "logging-files"
"""The logging operator's durable consumer on the log history stream."""
_JS = "$JS.API"


@dataclass(frozen=True)
class Permissions:
    """Subjects a user may publish and subscribe to (wildcards allowed); None: everything."""

    publish: tuple[str, ...] | None
    subscribe: tuple[str, ...] | None

    def __add__(self, other: Permissions) -> Permissions:
        return Permissions(
            _join(self.publish, other.publish), _join(self.subscribe, other.subscribe)
        )


ALL = Permissions(None, None)
"""No limit: the supervisor and the CLI."""


def _join(a: tuple[str, ...] | None, b: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if a is None or b is None:
        return None
    return tuple(dict.fromkeys((*a, *b)))


def inbox_prefix(operator_id: str) -> str:
    """The reply inbox prefix of ``operator_id``: ``_INBOX.irc%2Elibera`` (one token).

    The id is encoded into one token (``.`` as ``%2E``), so no operator's inboxes are a
    subtree of another's (``irc`` and ``irc.libera`` get ``_INBOX.irc`` and
    ``_INBOX.irc%2Elibera``).
    """
    return f"{INBOX_ROOT}.{encode_token(validate_operator_id(operator_id))}"


def kv_subjects(bucket: str) -> tuple[str, ...]:
    """What using the key-value bucket ``bucket`` takes: its stream's API and its keys."""
    stream = f"KV_{bucket}"
    return (
        f"$KV.{bucket}.>",
        # not CREATE or UPDATE: the creator of a stream chooses what it captures (the
        # supervisor makes the buckets, eeveepy/bus/buckets.py)
        f"{_JS}.STREAM.INFO.{stream}",
        f"{_JS}.STREAM.PURGE.{stream}",
        f"{_JS}.STREAM.MSG.GET.{stream}",
        f"{_JS}.STREAM.MSG.DELETE.{stream}",
        f"{_JS}.DIRECT.GET.{stream}",
        f"{_JS}.DIRECT.GET.{stream}.>",
        # watches, keys and history: ephemeral consumers delivering to the own inbox
        f"{_JS}.CONSUMER.CREATE.{stream}",
        f"{_JS}.CONSUMER.CREATE.{stream}.>",
        f"{_JS}.CONSUMER.DELETE.{stream}.>",
        f"{_JS}.CONSUMER.INFO.{stream}.>",
        f"$JS.ACK.{stream}.>",
    )


def consumer_subjects(stream: str, durable: str) -> tuple[str, ...]:
    """Publishing what keeping the durable consumer ``durable`` on ``stream`` takes: create
    (both API forms), replace, look up, pull, acknowledge (progress acks are several
    replies to one delivery, more than ``allow_responses`` grants)."""
    return (
        f"{_JS}.STREAM.INFO.{stream}",
        f"{_JS}.CONSUMER.CREATE.{stream}.{durable}",
        f"{_JS}.CONSUMER.CREATE.{stream}.{durable}.>",
        f"{_JS}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"{_JS}.CONSUMER.DELETE.{stream}.{durable}",
        f"{_JS}.CONSUMER.INFO.{stream}.{durable}",
        f"{_JS}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    )


def base_permissions(prefix: str, operator_id: str) -> Permissions:
    """What every operator may do, whatever its role."""
    s = Subjects(prefix)
    own = validate_operator_id(operator_id)
    return Permissions(
        publish=(
            s.operator_ready(own),
            f"{prefix}.log.*.{own}",
            f"{prefix}.dlq.>",
            f"{_JS}.INFO",
            f"{_JS}.STREAM.NAMES",
            *kv_subjects(kv_bucket_name(own, prefix)),
        ),
        subscribe=(s.operator_ping(own), s.operator_ctl(own), f"{inbox_prefix(own)}.>"),
    )


def role_permissions(
    prefix: str, operator_id: str, role: Role, *, platform: str = "", network: str = ""
) -> Permissions:
    """What ``role`` adds to :func:`base_permissions`; a connector needs its ``platform``
    and ``network``."""
    p = prefix
    if role is Role.CONNECTOR:
        scope = f"{platform}.{encode_token(network)}"
        out = chat_out_stream_name(prefix)
        durable = outbox_consumer_name(operator_id)
        return Permissions(
            publish=(
                f"{p}.chat.in.{scope}.*",
                f"{p}.chat.event.{scope}.*",
                *consumer_subjects(out, durable),
            ),
            subscribe=(
                f"{p}.chat.out.{scope}",
                f"{p}.chat.ctl.{scope}",
                f"{p}.chat.in.{scope}.*",
                f"{p}.chat.event.{scope}.*",
                deliver_subject(prefix, out, durable),
            ),
        )
    if role is Role.COMMAND:
        return Permissions(
            publish=(Subjects(prefix).command_register(operator_id), f"{p}.chat.out.>"),
            subscribe=(
                f"{p}.command.run.*",
                f"{p}.command.sync",
                Subjects(prefix).command_rejected(operator_id),
                f"{p}.chat.in.>",
                f"{p}.chat.event.>",
            ),
        )
    if role is Role.ROUTER:
        chat_in = chat_in_stream_name(prefix)
        return Permissions(
            publish=(
                f"{p}.command.run.*",
                f"{p}.command.sync",
                f"{p}.command.rejected.>",
                f"{p}.chat.out.>",
                # a registration clashing with a stale one: is its operator still there?
                f"{p}.operator.ping.>",
                *consumer_subjects(chat_in, ROUTER_DURABLE),
            ),
            subscribe=(
                f"{p}.command.register",
                f"{p}.command.register.>",
                f"{p}.chat.in.>",
                f"{p}.chat.event.>",
                deliver_subject(prefix, chat_in, ROUTER_DURABLE),
            ),
        )
    if role is Role.LOGGING:
        return Permissions(
            publish=(
                f"{p}.supervisor.status",
                *consumer_subjects(log_stream_name(prefix), LOGGING_DURABLE),
            ),
            subscribe=(f"{p}.log.>",),
        )
    return Permissions((), ())


def operator_permissions(
    prefix: str,
    operator_id: str,
    *,
    module: str | None,
    role: Role | None,
    settings: Mapping[str, Any],
    publish: Iterable[str] = (),
    subscribe: Iterable[str] = (),
) -> Permissions:
    """Everything operator ``operator_id`` may do, from its configuration table.

    ``role`` None takes the module's default role and extra subjects; ``publish`` and
    ``subscribe`` are extra subject patterns relative to ``prefix``.
    """
    s = Subjects(prefix)
    extra_pub: tuple[str, ...] = ()
    extra_sub: tuple[str, ...] = ()
    if role is None:
        role = default_role(module)
        extra_pub, extra_sub = default_extras(module)
    platform = network = ""
    if role is Role.CONNECTOR:
        platform = connector_platform(module, operator_id)
        network = connector_network(operator_id, platform, settings)
    extras = Permissions(
        tuple(s.pattern(x) for x in (*extra_pub, *publish)),
        tuple(s.pattern(x) for x in (*extra_sub, *subscribe)),
    )
    return (
        base_permissions(prefix, operator_id)
        + role_permissions(prefix, operator_id, role, platform=platform, network=network)
        + extras
    )
