"""Karma: ``thing++`` and ``thing--`` in chat; ``!karma thing`` tells the score.

It reads every chat line (``{p}.chat.in.>``) for ``word++``, ``word--``, ``(several words)++``
and ``(several words)--``, and keeps one count per thing and network in its key-value bucket
(``eevee_<id>``, key ``karma.<platform>.<network>.<thing>``, the thing lowercased with its
spaces collapsed, each part a bounded :func:`kv_token`), so scores survive restarts. Nobody
gives karma to themselves: ``alice++`` (or ``alice--``) by alice is refused with a note.
Lines in private messages, notices and lines starting with one of ``command_prefixes``
(``!karma c++`` is a question, not a vote) are not read. Run it under ``eevee up``
(``module = "operators.karma"``, next to ``operators.router``) or alone::

    python -m operators.karma --id karma --nats-url nats://127.0.0.1:4222

``!karma thing`` answers ``thing has karma 3``; ``!karma`` alone lists the top 5.

Most chat lines hold no vote: a line whose raw payload has neither ``++`` nor ``--`` is
skipped as it arrives (:func:`may_vote`), before it is validated, so those lines cost karma
next to nothing. What passes is validated and read as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Final

from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eeveepy import ChatMessage, CommandInvocation, Operator
from eeveepy.errors import StoreError
from eeveepy.protocol.models import MessageStyle
from eeveepy.protocol.tokens import kv_token
from eeveepy.runtime.kvstore import Update

KV_PREFIX: Final = "karma."
"""Keys: ``karma.<platform>.<network>.<thing>``, each part a :func:`kv_token`."""

MAX_THING: Final = 64
"""Longest thing (characters) that gets karma."""

# `word++`, `word--`, `(some words)++`: at the start of the line or after a space, and
# followed by the end of the line, a space or punctuation (`c++.` counts, `a--b` does not).
_VOTE_RE: Final = re.compile(
    r"(?:^|(?<=\s))(?:\((?P<group>[^()\n]+)\)|(?P<word>[^\s()]+?))(?P<op>\+\+|--)"
    r"(?=$|[\s,.;:!?)])"
)


class KarmaSettings(BaseModel):
    """Settings of the karma operator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command_prefixes: list[str] = Field(default_factory=lambda: ["!"])
    """Lines starting with one of these are commands: no karma is read in them."""
    top: int = Field(default=5, ge=1, le=50)
    """How many things ``!karma`` alone lists."""
    announce: bool = False
    """Answer every vote with the new score (``bob has karma 4``); off: votes are silent."""


class Score(BaseModel):
    """What is stored for a thing."""

    name: str
    """The thing as first written (case kept)."""
    score: int = 0


def normalize(thing: str) -> str:
    """The thing as it is counted: parentheses and surrounding space removed, spaces collapsed,
    lowercased (``(The  Build)`` -> ``the build``)."""
    thing = thing.strip()
    if len(thing) > 1 and thing.startswith("(") and thing.endswith(")"):
        thing = thing[1:-1]
    return " ".join(thing.split()).lower()


def votes(text: str) -> list[tuple[str, int]]:
    """The karma votes in a chat line: ``[(thing as written, +1 or -1), ...]``.

    A thing voted more than once in one line counts once (the first vote wins); things of only
    ``+`` and ``-`` (``-----``) and things longer than :data:`MAX_THING` are not votes.
    """
    out: dict[str, tuple[str, int]] = {}
    for match in _VOTE_RE.finditer(text):
        raw = match.group("group") or match.group("word") or ""
        thing = " ".join(raw.split())
        if not thing.strip("+-") or len(thing) > MAX_THING:
            continue
        out.setdefault(normalize(thing), (thing, 1 if match.group("op") == "++" else -1))
    return list(out.values())


def may_vote(payload: bytes) -> bool:
    """Whether a raw ``chat.in`` payload may hold a vote: it has ``++`` or ``--`` somewhere.

    A vote's ``++``/``--`` is in the envelope's JSON text as written (JSON escapes neither
    ``+`` nor ``-``; a publisher spelling them as ``\\u002b`` loses its votes, nothing else).
    A line let through is validated as any other: this only saves the lines with no vote.
    """
    return b"++" in payload or b"--" in payload


def karma_key(platform: str, network: str, thing: str) -> str:
    """The KV key of ``thing`` (normalized) on a network."""
    return KV_PREFIX + ".".join(kv_token(p) for p in (platform, network, normalize(thing)))


def vote(name: str, delta: int) -> Update:
    """The update adding ``delta`` to a stored score (a new one is named ``name``)."""

    def update(old: bytes | None) -> bytes:
        try:
            score = Score.model_validate_json(old) if old is not None else Score(name=name)
        except ValidationError:
            score = Score(name=name)
        return Score(name=score.name, score=score.score + delta).model_dump_json().encode()

    return update


def score_of(value: bytes | None) -> int:
    """The score in a stored value (0: none or unreadable)."""
    try:
        return Score.model_validate_json(value).score if value is not None else 0
    except ValidationError:
        return 0


async def scores(kv: KeyValue, platform: str, network: str) -> list[Score]:
    """Every score of a network, best first (ties by name)."""
    prefix = f"{KV_PREFIX}{kv_token(platform)}.{kv_token(network)}."
    found: list[Score] = []
    watcher = await kv.watch(prefix + ">", ignore_deletes=True)
    try:
        async with asyncio.timeout(5.0):
            async for entry in watcher:
                if entry is None:  # the end of what is stored
                    break
                with contextlib.suppress(ValidationError):
                    score = Score.model_validate_json(entry.value or b"")
                    if score.score:
                        found.append(score)
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()  # type: ignore[no-untyped-call]
    return sorted(found, key=lambda s: (-s.score, s.name.lower()))


def create() -> Operator[KarmaSettings]:
    """Build the karma operator (nothing runs until ``run()`` or ``serve()``)."""
    op = Operator(KarmaSettings, name="karma")

    @op.on_start
    async def open_store() -> None:
        await op.kv()  # no store, no point: a failure here fails the start

    @op.ipc.subscribe("chat.in.>", wants=may_vote)
    async def on_chat(msg: ChatMessage) -> None:
        if msg.private or msg.style is MessageStyle.NOTICE:
            return
        text = msg.text.strip()
        lowered = text.lower()
        if any(p and lowered.startswith(p.lower()) for p in op.settings.command_prefixes):
            return
        me = {msg.user.id.lower(), msg.user.name.lower()}
        for thing, delta in votes(text):
            if normalize(thing) in me:
                await op.reply(msg, f"{msg.user.name}: no self-karma.")
                continue
            key = karma_key(msg.platform, msg.network, thing)
            # A vote the store does not take now is kept and retried (op.store reports it).
            stored = await op.store.modify(key, vote(thing, delta))
            op.log.debug("karma", thing=thing, delta=delta, stored=stored)
            if op.settings.announce:
                with contextlib.suppress(StoreError):
                    score = score_of(await op.store.get(key))
                    await op.reply(msg, f"{thing} has karma {score}")

    @op.command(
        "karma",
        usage="!karma [THING]",
        help="The karma of THING (give it with THING++ or THING--); alone: the top things.",
    )
    async def karma(inv: CommandInvocation) -> str:
        msg = inv.message
        thing = normalize(inv.text)
        if thing:
            shown = " ".join(inv.text.strip().removeprefix("(").removesuffix(")").split())
            try:
                value = await op.store.get(karma_key(msg.platform, msg.network, thing))
            except StoreError:
                return "I cannot read karma right now (the store is unavailable)."
            return f"{shown} has karma {score_of(value)}"
        best = (await scores(await op.kv(), msg.platform, msg.network))[: op.settings.top]
        if not best:
            return "nobody has any karma yet."
        return "top karma: " + ", ".join(f"{s.name} ({s.score})" for s in best)

    return op


def main() -> None:
    """Run the karma operator as a process."""
    create().run()


if __name__ == "__main__":
    main()
