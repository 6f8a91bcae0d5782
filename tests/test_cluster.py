"""Two supervisors on a 3-node NATS cluster: placement, standbys, failover, exactly-once.

Everything real and on loopback: three nats-server processes routed into one cluster with
JetStream (streams and buckets in 3 replicas), two ``eevee up`` with their own state
directories, ngircd, and a raw IRC client sending commands the whole time (see
:mod:`tests.cluster_scenario`). The failover window (its length and the commands lost in
it) is printed: ``pytest -s tests/test_cluster.py`` shows it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from eeveepy.bus.natsconf import find_nats_server
from eeveepy.config import load_config
from tests import cluster_scenario as scenario
from tests.irc_servers import IrcClient, Ngircd
from tests.nats_cluster import NatsCluster, running_cluster
from tests.supervisor_fixtures import System, system_factory, wait_for

pytest_plugins = ["tests.irc_servers"]

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with running_cluster(tmp_path / "nats") as cluster:
        yield cluster


@pytest.fixture
def pair(tmp_path: Path, cluster: NatsCluster, ngircd: Ngircd) -> Iterator[tuple[System, System]]:
    with system_factory(tmp_path) as make:
        a = scenario.write(make("a"), "a", cluster, ngircd)
        b = scenario.write(make("b"), "b", cluster, ngircd)
        scenario.start_pair(a, b)
        yield a, b


async def test_failover_on_a_cluster(
    pair: tuple[System, System], cluster: NatsCluster, ngircd: Ngircd
) -> None:
    a, b = pair
    # One table of both supervisors; the connector runs on a, b stands by for it.
    ps = b.cli("ps", "--json")
    assert ps.returncode == 0, ps.stderr
    rows = {(op["id"], op["host"]): op for op in json.loads(ps.stdout)}
    assert rows[("irc.clu", "a")]["state"] == "RUNNING"
    assert rows[("irc.clu", "b")]["standby"] is True
    assert rows[("echo.a", "a")]["state"] == rows[("echo.b", "b")]["state"] == "RUNNING"
    assert ("echo.a", "b") not in rows  # pinned
    assert ("echo.b", "a") not in rows
    table = b.cli("ps").stdout
    assert "HOST" in table.splitlines()[0], table
    assert "STANDBY" in table, table
    # ctl from b's CLI reaches the supervisor running the operator.
    ctl = b.cli("ctl", "restart", "echo.a", "--json")
    assert ctl.returncode == 0, ctl.stderr
    assert json.loads(ctl.stdout)["operators"][0]["host"] == "a"

    client = await IrcClient.connect(ngircd.port, "clutester")
    try:
        await client.join(scenario.CHANNEL)
        assert scenario.NICK in await client.names(scenario.CHANNEL)
        out = await scenario.run(a, b, cluster, client)
    finally:
        await client.close()
    print("\n" + scenario.report(out))

    before = [s.n for s in out.sent if s.at < out.supervisor_killed - scenario.SLACK]
    assert before, scenario.report(out)
    assert all(out.replies[n] == 1 for n in before), out.replies
    assert out.failover_s < 2 * scenario.LEASE_TTL, scenario.report(out)
    after = [
        s.n
        for s in out.sent
        if out.supervisor_killed + out.failover_s <= s.at < out.node_killed - scenario.SLACK
        or s.at >= out.node_killed + 3 * scenario.SLACK
    ]
    assert after, scenario.report(out)
    wrong = {n: out.replies[n] for n in after if out.replies[n] != 1}
    assert not wrong, f"{wrong}; {scenario.report(out)}"
    # b's connector, router and echo replica keep working with a NATS node gone.
    assert scenario.running(b, "irc.clu")
    assert scenario.running(b, "router")
    # a comes back (same name and state directory): it stands by, b keeps the connector.
    back = System(a.root)
    try:
        await asyncio.to_thread(back.up, "echo.a", timeout=60)
        await asyncio.to_thread(
            wait_for, lambda: scenario.standby(back, "irc.clu"), 30, what="a standing by"
        )
        assert scenario.running(b, "irc.clu")
    finally:
        await asyncio.to_thread(back.stop)


def test_the_cluster_examples_are_valid(tmp_path: Path) -> None:
    """config/cluster/: nats-server accepts the three nodes' files; eevee both hosts'."""
    examples = Path(__file__).resolve().parents[1] / "config" / "cluster"
    for n in (1, 2, 3):
        checked = subprocess.run(
            [str(find_nats_server()), "-t", "-c", str(examples / f"nats-n{n}.conf")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert checked.returncode == 0, checked.stderr
    names = set()
    for host in ("a", "b"):
        config = load_config(examples / f"eevee-{host}.toml")
        assert config.bus.replicas == 3
        assert len(config.bus.seeds) == 3
        names.add(config.supervisor.name)
        system = System(tmp_path / host)
        check = system.cli(
            "-c", str(examples / f"eevee-{host}.toml"), "config", "check", config=False
        )
        assert check.returncode == 0, check.stdout + check.stderr
    assert names == {"a", "b"}
