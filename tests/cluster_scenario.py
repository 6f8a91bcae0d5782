"""Failover on a NATS cluster: two supervisors, a connector that moves, commands counted.

The scenario (used by ``tests/test_cluster.py`` and ``tests/bench/cluster.py``): a 3-node
nats-server cluster (:mod:`tests.nats_cluster`), supervisors ``a`` and ``b`` on it (separate
state directories), the IRC connector and the router free to run on either, an echo replica
pinned to each. ``a`` starts first and runs the connector and the router; ``b`` stands by.
A raw IRC client sends ``!echo cN`` into the channel every :data:`INTERVAL` seconds while
``a`` is SIGKILLed, ``b`` takes over, and later one NATS node is SIGKILLed. Every reply is
counted by its N.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.irc_servers import IrcClient, Ngircd
from tests.nats_cluster import NatsCluster
from tests.supervisor_fixtures import System, alive, wait_for

CHANNEL = "#cluster"
NICK = "eeveeclu"
PREFIX = "clu"
INTERVAL = 0.2
"""Seconds between two commands."""
LEASE_TTL = 8.0
SLACK = 1.0
"""Seconds before a kill in which a command may still be lost with it (on its way in)."""


@dataclass
class Sent:
    n: int
    at: float


@dataclass
class Outcome:
    """What the scenario saw; times are ``time.monotonic()``."""

    sent: list[Sent] = field(default_factory=list)
    replies: Counter[int] = field(default_factory=Counter)
    supervisor_killed: float = 0.0
    node_killed: float = 0.0
    took_over: float = 0.0
    """When ``b`` said the connector was RUNNING."""

    def answered_after(self, start: float) -> float | None:
        """When the first command sent after ``start`` that was answered was sent."""
        return next((s.at for s in self.sent if s.at >= start and self.replies[s.n]), None)

    def anomalies(self, start: float, end: float) -> tuple[list[int], list[int]]:
        """Commands sent in [start, end): those unanswered, those answered more than once."""
        window = [s.n for s in self.sent if start <= s.at < end]
        return (
            [n for n in window if self.replies[n] == 0],
            [n for n in window if self.replies[n] > 1],
        )

    @property
    def failover_s(self) -> float:
        """From the supervisor's death to the first command answered again being sent.

        The operators die a moment after their supervisor (they follow their parent), and
        may still answer what they had read: the search starts :data:`SLACK` after the kill,
        long before a standby could take over (half the lease TTL at least)."""
        back = self.answered_after(self.supervisor_killed + SLACK)
        return (back if back is not None else float("inf")) - self.supervisor_killed


def configs(cluster: NatsCluster, ngircd: Ngircd) -> dict[str, dict[str, Any]]:
    """The operators both supervisors are configured with."""
    irc = {"host": "127.0.0.1", "port": ngircd.port, "nick": NICK, "channels": [CHANNEL]}
    irc["egress_lines"] = 0  # (replies at the rate of the commands: no flood control)
    return {
        "router": {"module": "operators.router"},
        "irc.clu": {"module": "operators.irc", "settings": irc},
        "echo.a": {"module": "operators.echo", "hosts": ["a"]},
        "echo.b": {"module": "operators.echo", "hosts": ["b"]},
    }


def write(system: System, name: str, cluster: NatsCluster, ngircd: Ngircd) -> System:
    """``system``'s configuration: supervisor ``name`` on ``cluster``, replicas 3."""
    return system.write(
        configs(cluster, ngircd),
        prefix=PREFIX,
        bus_url=cluster.url,
        bus={"replicas": 3},
        supervisor={
            "name": name,
            "lease_ttl": LEASE_TTL,
            "start_timeout": 20,
            "ping_interval": 1.0,
            "ping_timeout": 1.0,
        },
    )


async def _send(client: IrcClient, out: Outcome, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        out.sent.append(Sent(n, time.monotonic()))
        await client.privmsg(CHANNEL, f"!echo c{n}")
        await asyncio.sleep(INTERVAL)


def _count(client: IrcClient, out: Outcome) -> None:
    out.replies.clear()
    for m in client.messages(source=NICK, target=CHANNEL):
        if m.text.startswith("c") and m.text[1:].isdigit():
            out.replies[int(m.text[1:])] += 1


async def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.2)


def standby(system: System, op_id: str) -> bool:
    op = (system.status() or {}).get(op_id)
    return bool(op and op["standby"])


def running(system: System, op_id: str) -> bool:
    op = (system.status() or {}).get(op_id)
    return bool(op and op["state"] == "RUNNING")


def start_pair(a: System, b: System) -> None:
    """``a`` up and running everything placed on it, then ``b`` standing by."""
    a.up("router", "irc.clu", "echo.a", timeout=60)
    b.up("echo.b", timeout=60)
    wait_for(lambda: standby(b, "irc.clu") and standby(b, "router"), 30, what="b standing by")


async def run(
    a: System, b: System, cluster: NatsCluster, client: IrcClient, *, settle: float = 3.0
) -> Outcome:
    """Commands throughout; kill ``a`` (running the connector), then a NATS node."""
    out = Outcome()
    stop = asyncio.Event()
    sender = asyncio.ensure_future(_send(client, out, stop))
    try:
        await asyncio.sleep(settle)
        a_tree = await asyncio.to_thread(a.collect)
        out.supervisor_killed = time.monotonic()
        os.kill(a.pid, signal.SIGKILL)
        await _until(lambda: running(b, "irc.clu"), 4 * LEASE_TTL, "b to run the connector")
        out.took_over = time.monotonic()
        await _until(lambda: not any(alive(p) for p in a_tree[1:]), 10, "a's operators to die")
        while out.answered_after(out.supervisor_killed + SLACK) is None:
            _count(client, out)
            if time.monotonic() - out.supervisor_killed > 6 * LEASE_TTL:
                break
            await client.more(0.5)
        await asyncio.sleep(settle)
        out.node_killed = time.monotonic()
        cluster.kill(0)
        await asyncio.sleep(3 * settle)
    finally:
        stop.set()
        await sender
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        _count(client, out)
        if all(out.replies[s.n] for s in out.sent if s.at > out.node_killed + SLACK):
            break
        await client.more(0.5)
    await asyncio.sleep(1.0)  # duplicates would come now
    _count(client, out)
    return out


def report(out: Outcome) -> str:
    lost, dup = out.anomalies(out.supervisor_killed - SLACK, out.supervisor_killed + out.failover_s)
    nlost, ndup = out.anomalies(out.node_killed - SLACK, out.node_killed + 3 * SLACK)
    return (
        f"{len(out.sent)} commands every {INTERVAL:g} s; supervisor killed: connector back on"
        f" the standby after {out.took_over - out.supervisor_killed:.2f} s, commands answered"
        f" again after {out.failover_s:.2f} s (lease TTL {LEASE_TTL:g} s): {len(lost)} lost,"
        f" {len(dup)} duplicated in that window; NATS node killed: {len(nlost)} lost,"
        f" {len(ndup)} duplicated around it"
    )
