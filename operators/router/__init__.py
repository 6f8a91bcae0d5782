"""Router: turns chat lines into command invocations (see "Commands" in docs/protocol.md).

It keeps the registrations command operators publish on ``{p}.command.register`` (in its
key-value bucket, so a restart loses none), reads ``{p}.chat.in.>`` (queue group ``router``),
recognises commands (prefix, addressed by name, or private), checks scope, permissions and
rate limits, parses the arguments and requests ``{p}.command.run.<name>``. It answers
``help`` itself. Run it under ``eevee up`` (``module = "operators.router"``) or alone::

    python -m operators.router --id router --nats-url nats://127.0.0.1:4222

The modules, in the order a chat line meets them: :mod:`.service` (the :class:`Router`: the
two deliveries of a line, dispatch, the request and its retries), :mod:`.parse` (is it a
command, its arguments), :mod:`.permissions` (who the user is, what they may run, where a
command is offered), :mod:`.ratelimit`, :mod:`.registry` (the accepted registrations) and
:mod:`.help`; :mod:`.registrations` accepts, refuses and stores registrations, and
:mod:`.settings` holds :class:`RouterSettings`. Everything but the service and the
registrations is pure logic, tested without a server in ``tests/test_router_logic.py``.
"""

from __future__ import annotations

from .service import Router, create, main
from .settings import CommandRules, RouterSettings

__all__ = ["CommandRules", "Router", "RouterSettings", "create", "main"]
