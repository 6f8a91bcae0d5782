"""The IRC connector killed mid-burst: every line it had accepted is answered once it is back.

Real ngircd, router, echo and connector processes; the chat streams exist (as under
``eevee up``). A raw client sends a burst of ``!echo N``; the connector is SIGKILLed while the
answers flow and started again. A line counts as accepted when the connector published it on
``chat.in`` (what the platform delivered to a connector that died before storing it is gone
with that connector's socket). Every accepted line must be answered on IRC.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.irc_servers", "tests.test_irc")

from eeveepy.bus.streams import ensure_chat_streams  # noqa: E402
from eeveepy.protocol.models import ChatMessage  # noqa: E402
from tests.irc_servers import Ngircd  # noqa: E402
from tests.test_irc import Bus, clients, joined, plain  # noqa: E402

pytest_plugins = ["tests.irc_servers"]

CHAN = "#kill"
BURST = 500
MAX_REPEATS = 2
"""Answers the connector may send twice: the last hop to IRC is at least once (a line written
to the server just before the kill, whose stream acknowledgement had not left yet)."""


async def test_connector_killed_mid_burst_answers_every_accepted_line(
    nats_url: str, tmp_path: Path, ngircd: Ngircd
) -> None:
    bus = Bus(nats_url, tmp_path)
    await bus.start()
    try:
        await ensure_chat_streams(bus.ipc.nc.jetstream(), bus.prefix)
        await asyncio.gather(
            bus.spawn("router", "operators.router", {}), bus.spawn("echo", "operators.echo", {})
        )
        await bus.wait_echo_registered()
        accepted = await bus.collect("chat.in.irc.kill.>", ChatMessage)
        settings = plain(ngircd, nick="eeveek", channels=[CHAN], egress_lines=0)
        async with clients(ngircd.port, "carol", channel=CHAN) as (carol,):
            mark = carol.mark()
            proc = await bus.connector("kill", settings)
            await joined(carol, CHAN, proc, since=mark)

            def answers() -> list[str]:
                return [
                    m.text
                    for m in carol.messages(since=mark, target=CHAN)
                    if m.nick.startswith("eeveek")
                ]

            async def send() -> None:
                for n in range(BURST):
                    await carol.privmsg(CHAN, f"!echo {n}")
                    if n % 20 == 19:  # still sending while the connector restarts
                        await asyncio.sleep(0.02)

            sender = asyncio.ensure_future(send())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while len(answers()) < BURST // 4:
                assert loop.time() < deadline, f"{len(answers())} answers\n{proc.log()}"
                await asyncio.sleep(0.002)
            await proc.stop(signal.SIGKILL)
            again = carol.mark()
            proc = await bus.connector("kill", settings)
            await joined(carol, CHAN, proc, since=again)
            await sender
            seen: set[str] = set()
            while not accepted.empty():
                seen.add(accepted.get_nowait().body.text.removeprefix("!echo "))
            assert BURST // 4 <= len(seen) < BURST  # some were said while the bot was away
            deadline = loop.time() + 30
            while seen - set(answers()) and loop.time() < deadline:
                await carol.more(0.2)
            await asyncio.sleep(1.0)  # room for a late repeat
            counts = Counter(answers())
            lost = sorted(seen - set(counts), key=int)
            assert not lost, f"{len(lost)} accepted lines never answered: {lost[:20]}"
            repeats = sum(c - 1 for c in counts.values())
            assert repeats <= MAX_REPEATS, f"{repeats} answers repeated: {counts.most_common(5)}"
            assert set(counts) <= seen  # nothing answered that was not accepted
    finally:
        await bus.close()
