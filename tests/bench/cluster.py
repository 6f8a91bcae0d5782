"""Failover time on a NATS cluster: the supervisor running the IRC connector is SIGKILLed.

The scenario of ``tests/test_cluster.py`` (:mod:`tests.cluster_scenario`): a 3-node
nats-server cluster, two ``eevee up`` on it, the connector and the router free, an echo
replica pinned to each, commands through ngircd every 0.2 s. Printed: the time from the kill
until commands are answered again, as a ratio to the lease TTL measured against (the time a
standby waiting for the lease to expire would need at best is 2/3 of it, plus its start).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from tests import cluster_scenario as scenario
from tests.bench.servers import run_if_installed
from tests.irc_servers import IrcClient, running_ngircd
from tests.nats_cluster import running_cluster
from tests.supervisor_fixtures import system_factory


def run() -> dict[str, Any]:
    """One failover with a fresh cluster, ngircd and two supervisors."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_ngircd() as ircd,
        running_cluster(Path(tmp) / "nats") as cluster,
        system_factory(Path(tmp)) as make,
    ):
        a = scenario.write(make("a"), "a", cluster, ircd)
        b = scenario.write(make("b"), "b", cluster, ircd)
        scenario.start_pair(a, b)

        async def go() -> scenario.Outcome:
            client = await IrcClient.connect(ircd.port, "bencher")
            try:
                await client.join(scenario.CHANNEL)
                return await scenario.run(a, b, cluster, client)
            finally:
                await client.close()

        out = asyncio.run(go())
    lost, dup = out.anomalies(
        out.supervisor_killed - scenario.SLACK, out.supervisor_killed + out.failover_s
    )
    return {"failover_s": out.failover_s, "lost": len(lost), "dup": len(dup), "report": out}


def main() -> None:
    r = run_if_installed("ngircd", run, "apt-get install ngircd; `make chat-servers`")
    if r is None:
        return
    ttl = scenario.LEASE_TTL
    print(
        f"  failover after SIGKILL of the connector's supervisor: {r['failover_s'] / ttl:.2f}"
        f" of the lease TTL ({r['failover_s']:.2f} s of {ttl:g} s; target < 1);"
        f" {r['lost']} commands lost and {r['dup']} duplicated in the window"
    )
    print(f"  {scenario.report(r['report'])}")


if __name__ == "__main__":
    main()
