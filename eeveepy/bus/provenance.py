"""Does an envelope say it comes from where its subject says it comes from?

With bus permissions the subject is what the broker vouches for: only operator ``x`` may
publish ``{p}.operator.ready.x`` or ``{p}.command.register.x``, only the connector of
``irc``/``libera`` on ``{p}.chat.in.irc.libera.>``. The envelope's own fields are written by
the publisher, so a receiver trusts them only where they agree with the subject:
:func:`provenance_problem` says where they do not, and the ipc layer dead-letters such an
envelope with that reason instead of handling it. Identity fields a connector sets
(``user.account``...) are thereby trusted only from that connector's subjects.

A subscription asks its :class:`Provenance` instead: the verdict depends on nothing but the
subject, the source and the body's ``platform`` and ``network``, and one subscription sees
few combinations of them, so it remembers each verdict rather than parsing the subject again
for every message.
"""

from __future__ import annotations

from typing import Any

from eeveepy.protocol.tokens import encode_token

__all__ = ["Provenance", "provenance_problem"]

TOKENS_KEPT = 256
"""Network names whose subject token a subscription remembers."""

VERDICTS_KEPT = 256
"""Verdicts (subject, source, platform, network) a :class:`Provenance` remembers."""

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


class Provenance:
    """:func:`provenance_problem` for the envelopes one subscription receives, each verdict
    remembered (at most :data:`VERDICTS_KEPT`; all forgotten when that many are kept).

    ``head`` is the subject prefix with its dot (``"eevee."``): subjects outside it are not
    checked. A body that is a plain dict (a receiver of ``Envelope[dict]``), or whose
    ``platform`` or ``network`` cannot be a dict key, is checked afresh each time.
    """

    __slots__ = ("_head", "_tokens", "_verdicts")

    def __init__(self, head: str) -> None:
        self._head = head
        self._tokens: dict[str, str] = {}
        self._verdicts: dict[tuple[str, str, Any, Any], str | None] = {}

    def problem(self, subject: str, source: str, body: Any) -> str | None:
        """Why an envelope from ``source`` with ``body`` cannot have been published on the
        (full) ``subject`` by whom it names; None when it can (or is outside the prefix)."""
        if isinstance(body, dict):
            return self._check(subject, source, body)
        key = (subject, source, getattr(body, "platform", None), getattr(body, "network", None))
        try:
            return self._verdicts[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable platform or network: never remembered
            return self._check(subject, source, body)
        verdict = self._check(subject, source, body)
        verdicts = self._verdicts
        if len(verdicts) >= VERDICTS_KEPT:
            verdicts.clear()
        verdicts[key] = verdict
        return verdict

    def _check(self, subject: str, source: str, body: Any) -> str | None:
        head = self._head
        if not subject.startswith(head):
            return None
        return provenance_problem(subject[len(head) :], source, body, self._tokens)
