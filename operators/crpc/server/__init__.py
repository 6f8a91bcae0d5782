"""Serving eevee's own commands as a ChatOps RPC endpoint (the server side of ``operators.crpc``).

``GET /_chatops`` lists the commands registered with the router; ``POST /_chatops/<method>``
checks the signature (one or two public keys, the ±5-minute window, nonces never reused),
then says the command on the bus as a private line of the ``crpc`` platform, as the given
user in the given room, so the router's permissions, scopes and rate limits apply, and
answers with what came back. The operator calls :func:`start_server` and, at stop,
``await running.stop()``.
"""

from __future__ import annotations

from .run import RunningServer, start_server
from .settings import ServerSettings

__all__ = ["RunningServer", "ServerSettings", "start_server"]
