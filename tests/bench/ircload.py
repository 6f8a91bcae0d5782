"""The IRC load the IRC benchmarks put on a bot, from a raw client in the bot's channel.

``!echo N`` sent one after the other (each waits for the bot's ``N``), then a burst sent back
to back in one write, its answers checked for completeness and order. One harness for every
bot measured (eeveepy's connector, Sopel, errbot), so their figures compare.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.irc_servers import IrcClient, Line

__all__ = ["Load", "burst", "load", "plain", "ready", "round_trip", "sequential"]

_FORMATTING = re.compile(r"\x03(\d{1,2}(,\d{1,2})?)?|[\x02\x0f\x11\x16\x1d\x1e\x1f]")


def plain(text: str) -> str:
    """``text`` without IRC formatting (errbot ends some replies with a bare colour reset)."""
    return _FORMATTING.sub("", text).strip()


@dataclass(frozen=True)
class Load:
    """What was measured: sequential latencies (µs) and one burst."""

    p50_us: float
    p99_us: float
    burst_per_s: float
    missing: int
    in_order: bool


def _from(bot: str, channel: str, text: str | None = None) -> Callable[[Line], bool]:
    def match(m: Line) -> bool:
        return (
            m.command == "PRIVMSG"
            and m.nick.lower() == bot.lower()
            and m.params[0].lower() == channel.lower()
            and (text is None or plain(m.text) == text)
        )

    return match


async def round_trip(client: IrcClient, bot: str, channel: str, text: str, timeout: float) -> float:
    """Send ``!echo text`` in ``channel``; seconds until ``bot`` said ``text`` there."""
    mark = client.mark()
    t0 = time.perf_counter()
    await client.privmsg(channel, f"!echo {text}")
    await client.wait(_from(bot, channel, text), since=mark, timeout=timeout)
    return time.perf_counter() - t0


async def ready(client: IrcClient, bot: str, channel: str, timeout: float) -> None:
    """Until ``bot`` answers ``!echo`` (its command is registered, its plugins loaded)."""
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        n += 1
        try:
            await round_trip(client, bot, channel, f"r{n}", 0.5)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                why = f"{bot} did not answer !echo in {channel} within {timeout} s"
                raise AssertionError(why) from None


async def sequential(client: IrcClient, bot: str, channel: str, count: int) -> list[float]:
    """``count`` round trips one after the other; their times in µs, sorted."""
    samples = [await round_trip(client, bot, channel, str(n), 5.0) * 1e6 for n in range(count)]
    samples.sort()
    return samples


async def burst(
    client: IrcClient, bot: str, channel: str, count: int, timeout: float = 30.0
) -> tuple[float, int, bool]:
    """``count`` commands in one write: (answers per second, answers missing, in order)."""
    await asyncio.sleep(0.2)
    mark = client.mark()
    texts = [f"b{n}" for n in range(count)]
    want = set(texts)
    match = _from(bot, channel)
    got: list[str] = []
    t0 = time.perf_counter()
    await client.send(*(f"PRIVMSG {channel} :!echo {t}" for t in texts))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [t for m in client.lines[mark:] if match(m) and (t := plain(m.text)) in want]
        if len(got) >= count:
            break
        await client.more(1.0)
    elapsed = time.perf_counter() - t0
    return len(got) / elapsed, count - len(set(got)), got == texts


async def load(
    client: IrcClient, bot: str, channel: str, *, count: int = 300, burst_of: int = 300
) -> Load:
    """The whole load: ``count`` sequential round trips, then a burst of ``burst_of``."""
    samples = await sequential(client, bot, channel, count)
    rate, missing, in_order = await burst(client, bot, channel, burst_of)
    return Load(
        p50_us=statistics.median(samples),
        p99_us=samples[max(0, int(len(samples) * 0.99) - 1)],
        burst_per_s=rate,
        missing=missing,
        in_order=in_order,
    )
