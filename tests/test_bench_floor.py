"""The floor's tiers of ``make bench-peers``: every tier's relays answer ``!echo`` on a real
ngircd, each answer right, complete and in order; and the tiers stay configured as eeveepy."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

pytest.register_assert_rewrite("tests.irc_servers")  # imported below, before its own tests

from eeveepy.bus import backstop, delivery  # noqa: E402
from tests.bench.ircload import burst, ready, round_trip  # noqa: E402
from tests.bench.peers import guarantee  # noqa: E402
from tests.bench.peers.floor import FloorBot, floor  # noqa: E402
from tests.bench.peers.hops import Hop, label  # noqa: E402
from tests.bench.peers.journal import TAKEN, Journal, undone  # noqa: E402
from tests.bench.peers.relays import STORES_ONLY, TIERS  # noqa: E402
from tests.bench.peers.tiers import CHAT_IN_STREAM, CHAT_OUT_STREAM, JOURNAL  # noqa: E402
from tests.irc_servers import IrcClient, Ngircd  # noqa: E402

pytest_plugins = ["tests.irc_servers"]


async def _answers(port: int, bots: list[FloorBot]) -> dict[str, tuple[int, bool]]:
    """Each bot answers one ``!echo`` of spaced, non-ASCII text with that text (else
    AssertionError), then a burst of 30: (answers missing, in order)."""
    client = await IrcClient.connect(port, "tierprobe")
    try:
        out = {}
        for bot in bots:
            await client.join(bot.channel)
            await ready(client, bot.nick, bot.channel, 20.0)
            await round_trip(client, bot.nick, bot.channel, "héllo  wörld", 5.0)
            _, missing, in_order = await burst(client, bot.nick, bot.channel, 30, timeout=10.0)
            out[bot.name] = (missing, in_order)
        return out
    finally:
        await client.close()


async def _stored(bot: FloorBot) -> list[tuple[int, int]]:
    """(messages stored in all, messages left) of each chat stream, once its backstop's pass
    acknowledged them all (or 5 s passed; at once without backstops); the journal tier has no
    input stream (0, 0)."""
    nc = await nats.connect(bot.url)
    try:
        js = nc.jetstream()
        for _ in range(50):
            streams = (CHAT_OUT_STREAM,) if bot.tier.journal else (CHAT_IN_STREAM, CHAT_OUT_STREAM)
            states = [(await js.stream_info(s)).state for s in streams]
            if not bot.tier.backstops or not any(state.messages for state in states):
                break
            await asyncio.sleep(0.1)
        figures = [(state.last_seq, state.messages) for state in states]
        return [(0, 0), *figures] if bot.tier.journal else figures
    finally:
        await nc.close()


def test_every_tier_answers_echo_completely_and_in_order(ngircd: Ngircd, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        tiers = [*TIERS.values(), STORES_ONLY]
        bots = [stack.enter_context(floor(ngircd.port, tmp_path, tier)) for tier in tiers]
        answers = asyncio.run(_answers(ngircd.port, bots))
        stored = {bot.tier: asyncio.run(_stored(bot)) for bot in bots if bot.tier.streams}
    assert len(answers) == len(TIERS) + 1 == 6
    assert answers == dict.fromkeys(answers, (0, True))
    # Every line and every reply went through its stream, and each backstop acknowledged them
    # (without backstops, the streams keep them all); the journal tier's lines went through
    # its journal instead, each marked done there.
    assert len(stored) == 4
    for tier, [(lines, lines_left), (replies, replies_left)] in stored.items():
        if tier.journal:
            journal = tmp_path / f"{tier.nick}-{JOURNAL}"
            records = journal.read_bytes().splitlines()
            sent = [r for r in records if r.startswith(b"+ ")]
            done = {r[2:] for r in records if r.startswith(b"- ")}
            assert len(sent) == replies >= 32, tier.name
            assert {r[2:].split(b" ", 1)[0] for r in sent} == done, tier.name
            assert undone(journal) == {}, tier.name
            assert replies_left == 0, tier.name
            continue
        assert lines == replies >= 32, tier.name
        left = (0, 0) if tier.backstops else (lines, replies)
        assert (lines_left, replies_left) == left, tier.name


def test_the_tiers_use_eeveepys_delivery_settings() -> None:
    assert (guarantee.TICK, guarantee.BUSY, guarantee.GRACE) == (
        backstop.TICK,
        backstop.BUSY,
        backstop.GRACE,
    )
    assert guarantee.ONCE_LIMIT == delivery.Once()._limit
    assert (guarantee.ACK_WAIT, guarantee.MAX_DELIVER, guarantee.MAX_ACK_PENDING) == (
        delivery.ACK_WAIT,
        delivery.MAX_DELIVER,
        delivery.MAX_ACK_PENDING,
    )


def test_each_tier_adds_one_part_to_the_one_below() -> None:
    design = [t for t in TIERS.values() if not t.journal]
    parts = [(t.envelopes, t.streams, t.result) for t in design]
    assert [sum(p) for p in parts] == [0, 1, 2, 3]
    assert all(all(b[i] >= a[i] for i in range(3)) for a, b in itertools.pairwise(parts))
    assert all(t.backstops for t in TIERS.values())
    # The journal tier: the top tier's parts, chat input kept by the journal instead.
    [journal] = [t for t in TIERS.values() if t.journal]
    top = design[-1]
    assert (
        (journal.envelopes, journal.streams, journal.result)
        == (True, True, True)
        == (
            top.envelopes,
            top.streams,
            top.result,
        )
    )
    names = list(TIERS)
    assert names.index("floor+envelopes") < names.index(journal.name) < names.index(top.name)


async def test_the_journal_sends_again_what_was_not_taken(nats_url: str, tmp_path: Path) -> None:
    """A line left undone in the file is sent at the start, a line not taken is sent again
    after ``resend``, and each is marked done once taken; a line done is never sent again."""
    subject, path = f"jtier.{uuid.uuid4().hex}", tmp_path / JOURNAL
    path.write_bytes(b"+ a %s left\n+ b %s done\n- b\n" % (subject.encode(), subject.encode()))
    nc = await nats.connect(nats_url)
    got: list[bytes] = []

    async def router(msg: Msg) -> None:  # the first answer of each line is lost
        got.append(msg.data)
        if got.count(msg.data) > 1:
            await nc.publish(msg.reply, TAKEN)

    await nc.subscribe(subject, cb=router)
    journal = Journal(nc, path, resend=0.3)
    sweep = await journal.start()
    try:
        await journal.publish(subject, b"new", "c")
        for _ in range(100):
            if not undone(path):
                break
            await asyncio.sleep(0.05)
    finally:
        sweep.cancel()
        journal.close()
        await nc.close()
    assert undone(path) == {}
    assert sorted(got) == [b"left", b"left", b"new", b"new"]
    new = b"+ c %s new" % subject.encode()
    assert sorted(path.read_bytes().splitlines()[3:]) == sorted([new, b"- a", b"- c"])


def test_the_routers_taken_is_told_apart_from_a_command_result() -> None:
    taken = Hop(0.0, "_INBOX.c.1", "", TAKEN, len(TAKEN))
    result = Hop(0.0, "_INBOX.r.1", "", b'{"v":1,', 200)
    assert [label(h, "floor")[0] for h in (taken, result)] == ["guarantee", "result"]
