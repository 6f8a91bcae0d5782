"""Envelope provenance: which envelopes disagree with the subjects they came on.

Pure functions: :func:`provenance_problem` itself, and a subscription's :class:`Provenance`,
which remembers verdicts and must give exactly the verdicts (and reasons) the function gives
(the refusals on a real bus are in test_ipc_rejects.py and test_permissions.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from eeveepy.bus.provenance import TOKENS_KEPT, VERDICTS_KEPT, Provenance, provenance_problem
from eeveepy.protocol.models import Body, ChatEvent, ChatEventType, ChatMessage, ChatUser, Ping


def _msg(platform: str, network: str) -> ChatMessage:
    user = ChatUser(id="a", name="a", account="root")
    return ChatMessage(platform=platform, network=network, room="#r", user=user, text="x")


@pytest.mark.parametrize(
    ("subject", "source", "body", "problem"),
    [
        ("chat.in.irc.libera.#r", "irc.libera", _msg("irc", "libera"), None),
        ("chat.in.irc.Libera%2EChat.#r", "x", _msg("irc", "Libera.Chat"), None),
        ("chat.in.irc.libera.#r", "x", _msg("irc", "oftc"), "body.network 'oftc'"),
        ("chat.in.irc.libera.#r", "x", _msg("xmpp", "libera"), "body.platform 'xmpp'"),
        ("chat.event.irc.libera.join", "x", {"platform": "irc"}, "body.network None"),
        ("chat.out.irc.libera", "router", {"platform": "xmpp"}, None),
        ("operator.ready.irc.libera", "irc.libera", {}, None),
        ("operator.ready.irc.libera", "irc", {}, "source 'irc' is not 'irc.libera'"),
        ("command.register.echo", "echo", {}, None),
        ("command.register.echo", "mallory", {}, "source 'mallory' is not 'echo'"),
        ("command.register", "anyone", {}, None),
        ("log.info.echo", "supervisor", {}, None),
    ],
)
def test_provenance(subject: str, source: str, body: Any, problem: str | None) -> None:
    tokens: dict[str, str] = {}
    for _ in range(2):  # without the tokens' memory, then with it, twice (learnt, then used)
        for said in (
            provenance_problem(subject, source, body),
            provenance_problem(subject, source, body, tokens),
        ):
            if problem is None:
                assert said is None
            else:
                assert said is not None
                assert said.startswith(problem)


def test_provenance_remembers_tokens_within_bounds() -> None:
    tokens: dict[str, str] = {}
    assert provenance_problem("chat.in.irc.a%2Eb.#r", "x", _msg("irc", "a.b"), tokens) is None
    assert tokens == {"a.b": "a%2Eb"}
    # the literal token is another network's name: still refused once remembered
    said = provenance_problem("chat.in.irc.a%2Eb.#r", "x", _msg("irc", "a%2Eb"), tokens)
    assert said is not None
    assert said.startswith("body.network 'a%2Eb'")
    for n in range(TOKENS_KEPT + 10):
        provenance_problem(f"chat.in.irc.n{n}.#r", "x", _msg("irc", f"n{n}"), tokens)
    assert len(tokens) <= TOKENS_KEPT


class _ListNetwork(Body):
    """A body whose network cannot be a dict key."""

    platform: str = "irc"
    network: list[str] = ["libera"]


def _table() -> list[tuple[str, str, Any]]:
    """Envelopes on full subjects, good and hostile; several share a subject or a body."""
    event = ChatEvent(platform="irc", network="libera", event=ChatEventType.JOIN)
    return [
        ("eevee.chat.in.irc.libera.#r", "irc.libera", _msg("irc", "libera")),
        ("eevee.chat.in.irc.libera.#r", "irc.libera", _msg("irc", "oftc")),
        ("eevee.chat.in.irc.libera.#r", "irc.libera", _msg("xmpp", "libera")),
        ("eevee.chat.in.irc.libera.#other", "mallory", _msg("irc", "libera")),
        ("eevee.chat.in.irc.Libera%2EChat.#r", "x", _msg("irc", "Libera.Chat")),
        ("eevee.chat.in.irc.Libera%2EChat.#r", "x", _msg("irc", "Libera%2EChat")),
        ("eevee.chat.in.irc.a%2A%3E.#r", "x", _msg("irc", "a*>")),
        ("eevee.chat.in.irc.a%2A%3E.#r", "x", _msg("irc", "a>*")),
        ("eevee.chat.in.irc.%20.#r", "x", _msg("irc", " ")),
        ("eevee.chat.in.irc.%20.#r", "x", _msg("irc", "")),
        ("eevee.chat.in.irc.日本.#r", "x", _msg("irc", "日本")),
        ("eevee.chat.in.irc", "x", _msg("irc", "libera")),
        ("eevee.chat.in.", "x", _msg("", "")),
        ("eevee.chat.event.irc.libera.join", "x", event),
        ("eevee.chat.event.irc.oftc.join", "x", event),
        ("eevee.chat.event.irc.libera.join", "x", Ping()),
        ("eevee.chat.event.irc.libera.join", "x", {"platform": "irc", "network": "libera"}),
        ("eevee.chat.event.irc.libera.join", "x", {"platform": "irc", "network": ["libera"]}),
        ("eevee.chat.event.irc.libera.join", "x", {"platform": "irc"}),
        ("eevee.chat.in.irc.libera.#r", "x", _ListNetwork()),
        ("eevee.chat.out.irc.libera", "router", _msg("xmpp", "oftc")),
        ("eevee.operator.ready.irc.libera", "irc.libera", Ping()),
        ("eevee.operator.ready.irc.libera", "irc", Ping()),
        ("eevee.operator.ready.irc.libera", "irc", _msg("irc", "libera")),
        ("eevee.command.register.echo", "echo", {}),
        ("eevee.command.register.echo", "mallory", {}),
        ("eevee.command.register.echo", "mallory", Ping()),
        ("other.command.register.echo", "mallory", Ping()),
        ("other.chat.in.irc.libera.#r", "x", _msg("irc", "oftc")),
        ("eevee.log.info.echo", "supervisor", Ping()),
    ]


def test_remembered_verdicts_are_the_functions() -> None:
    table = _table()
    expected = [
        provenance_problem(subject.removeprefix("eevee."), source, body)
        if subject.startswith("eevee.")
        else None
        for subject, source, body in table
    ]
    assert any(v is None for v in expected)
    assert sum(v is not None for v in expected) >= 15
    provenance = Provenance("eevee.")
    for _ in range(3):  # learnt, then remembered (in another order each time)
        said = [provenance.problem(*row) for row in table]
        assert said == expected
        table.reverse()
        expected.reverse()


def test_remembered_verdicts_stay_within_bounds() -> None:
    provenance = Provenance("eevee.")
    for n in range(VERDICTS_KEPT * 2 + 10):
        subject = f"eevee.chat.in.irc.n{n}.#r"
        assert provenance.problem(subject, "x", _msg("irc", f"n{n}")) is None
        assert provenance.problem(subject, "x", _msg("irc", "other")) is not None
        assert len(provenance._verdicts) <= VERDICTS_KEPT
        assert len(provenance._tokens) <= TOKENS_KEPT
