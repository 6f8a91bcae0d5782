"""Does an envelope say it comes from where its subject says it comes from?

With bus permissions the subject is what the broker vouches for: only operator ``x`` may
publish ``{p}.operator.ready.x`` or ``{p}.command.register.x``, only the connector of
``irc``/``libera`` on ``{p}.chat.in.irc.libera.>``. The envelope's own fields are written by
the publisher, so a receiver trusts them only where they agree with the subject:
:func:`provenance_problem` says where they do not, and the ipc layer dead-letters such an
envelope with that reason instead of handling it. Identity fields a connector sets
(``user.account``...) are thereby trusted only from that connector's subjects.
"""

from __future__ import annotations

from typing import Any

from eeveepy.protocol.tokens import encode_token

__all__ = ["provenance_problem"]

TOKENS_KEPT = 256
"""Network names whose subject token a subscription remembers."""

_OWN_ID_BRANCHES = ("operator.ready.", "command.register.")
"""Branches whose subject ends with the publisher's operator id."""


def provenance_problem(
    relative: str, source: str, body: Any, tokens: dict[str, str] | None = None
) -> str | None:
    """Why an envelope from ``source`` with ``body`` cannot have been published on the subject
    ``relative`` (without the prefix) by whom the subject names; None when it can.

    ``tokens`` remembers the subject token of each network name seen (a subscription passes
    one dict to all its calls: a receiver sees few networks, and encoding one costs more than
    the rest of the check); it is cleared when it grows past :data:`TOKENS_KEPT`.
    """
    if relative.startswith("chat."):
        kind, _, rest = relative[5:].partition(".")
        if kind not in ("in", "event"):
            return None
        platform, _, rest = rest.partition(".")
        network = rest.partition(".")[0]
        if isinstance(body, dict):  # (a receiver of Envelope[dict]: no model)
            said_platform, said_network = body.get("platform"), body.get("network")
        else:
            said_platform = getattr(body, "platform", None)
            said_network = getattr(body, "network", None)
        if said_platform != platform:
            return f"body.platform {said_platform!r} is not the subject's {platform!r}"
        if not isinstance(said_network, str):
            return f"body.network {said_network!r} is not the subject's network"
        token = tokens.get(said_network) if tokens is not None else None
        if token is None:
            token = encode_token(said_network)
            if tokens is not None:
                if len(tokens) >= TOKENS_KEPT:
                    tokens.clear()
                tokens[said_network] = token
        if token != network:
            return f"body.network {said_network!r} is not the subject's network"
        return None
    for branch in _OWN_ID_BRANCHES:
        if relative.startswith(branch):
            owner = relative[len(branch) :]
            if source != owner:
                return f"source {source!r} is not {owner!r}, whose subject this is"
    return None
