"""The names of eeveepy's NATS resources: streams, key-value buckets, consumers.

Every name carries the subject prefix, so two systems (two prefixes) can share one NATS
cluster; the default prefix ``eevee`` gives the names eeveepy always used.

Subjects have their own module (:mod:`eeveepy.protocol.subjects`); everything else the bus
holds by name is named here, so that an operator in another language, a second supervisor and
``eevee logs`` all find the same resources, and a rename happens in one place.

| resource | name (prefix ``eevee``) |
|---|---|
| chat input stream (``{p}.chat.in.>``) | ``EEVEE_CHAT_IN`` |
| chat output stream (``{p}.chat.out.>``) | ``EEVEE_CHAT_OUT`` |
| log history stream (``{p}.log.>``) | ``EEVEE_LOGS`` |
| an operator's key-value bucket | ``eevee_<id, . and - as _>`` (``acme.bot``: ``acme_bot_<id>``) |
| the supervisors' leases bucket | ``eevee_leases`` |
| a durable consumer's deliver subject | ``{p}.deliver.<stream>.<durable>`` |
| a connector's ``chat.out`` consumer | ``out_<id with . as _>`` |
"""

from __future__ import annotations

from eeveepy.protocol.subjects import DEFAULT_PREFIX, validate_prefix

__all__ = [
    "chat_in_stream_name",
    "chat_out_stream_name",
    "deliver_subject",
    "kv_bucket_name",
    "leases_bucket_name",
    "log_stream_name",
    "outbox_consumer_name",
]


def _stream_stem(prefix: str) -> str:
    """The prefix in capitals, dots as underscores: ``acme.bot`` -> ``ACME_BOT``."""
    validate_prefix(prefix)
    return prefix.replace(".", "_").upper()


def chat_in_stream_name(prefix: str) -> str:
    """The stream holding ``{p}.chat.in.>``: ``eevee`` -> ``EEVEE_CHAT_IN``."""
    return _stream_stem(prefix) + "_CHAT_IN"


def chat_out_stream_name(prefix: str) -> str:
    """The stream holding ``{p}.chat.out.>``: ``eevee`` -> ``EEVEE_CHAT_OUT``."""
    return _stream_stem(prefix) + "_CHAT_OUT"


def log_stream_name(prefix: str) -> str:
    """The stream holding the log events of ``prefix``: ``eevee`` -> ``EEVEE_LOGS``."""
    return _stream_stem(prefix) + "_LOGS"


def kv_bucket_name(operator_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The JetStream KV bucket of ``operator_id`` under ``prefix``: ``<prefix>_<id>``, dots
    (and the id's dashes) as ``_`` (``eevee``, ``irc.libera`` -> ``eevee_irc_libera``)."""
    return _bucket_stem(prefix) + "_" + operator_id.replace(".", "_").replace("-", "_")


def _bucket_stem(prefix: str) -> str:
    """The prefix as it starts a bucket name: ``acme.bot`` -> ``acme_bot``."""
    validate_prefix(prefix)
    return prefix.replace(".", "_")


def leases_bucket_name(prefix: str) -> str:
    """The KV bucket in which supervisors lease operator ids: ``eevee`` -> ``eevee_leases``."""
    return _bucket_stem(prefix) + "_leases"


def deliver_subject(prefix: str, stream: str, durable: str) -> str:
    """Where the server pushes a durable consumer's messages: ``{p}.deliver.<stream>.<durable>``."""
    return f"{prefix}.deliver.{stream}.{durable}"


def outbox_consumer_name(operator_id: str) -> str:
    """A connector's durable consumer on the chat output stream: ``out_irc_libera``."""
    return "out_" + operator_id.replace(".", "_")
