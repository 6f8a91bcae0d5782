"""A real 3-node nats-server cluster with JetStream on loopback, for tests and benchmarks.

Each node listens for clients and for routes on free ports of 127.0.0.1, keeps its JetStream
store in a directory of its own, and routes to the others (``config/cluster/nats.conf`` is
the same configuration for real hosts). :meth:`NatsCluster.start` waits until every node
says it is ready and JetStream answers through the cluster (a meta leader is elected);
:meth:`kill` SIGKILLs one node; :meth:`stop` stops what is left (bounded).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats

from eeveepy.bus.natsconf import find_nats_server
from tests.irc_servers import HOST, free_port, port_open
from tests.supervisor_fixtures import run_async

START_TIMEOUT = 30.0


@dataclass
class Node:
    name: str
    port: int
    route_port: int
    store: Path
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"


class NatsCluster:
    """``size`` nats-server nodes of one cluster under ``root``."""

    def __init__(self, root: Path, size: int = 3, name: str = "eevee-test") -> None:
        self.name = name
        self.nodes = []
        for i in range(1, size + 1):
            d = root / f"n{i}"
            d.mkdir(parents=True, exist_ok=True)
            self.nodes.append(
                Node(f"n{i}", free_port(), free_port(), d / "js", d / "nats.conf", d / "nats.log")
            )

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated (as ``[bus] url`` takes a cluster's seeds)."""
        return ",".join(node.url for node in self.nodes)

    def _config(self, node: Node) -> str:
        routes = ", ".join(f"nats-route://{HOST}:{n.route_port}" for n in self.nodes)
        return (
            f"server_name: {node.name}\n"
            f"listen: {HOST}:{node.port}\n"
            f'jetstream {{ store_dir: "{node.store}" }}\n'
            f"cluster {{\n  name: {self.name}\n  listen: {HOST}:{node.route_port}\n"
            f"  routes: [{routes}]\n}}\n"
        )

    def start(self) -> NatsCluster:
        binary = str(find_nats_server())
        for node in self.nodes:
            node.config.write_text(self._config(node))
            with node.log.open("ab") as log:
                node.proc = subprocess.Popen(
                    [binary, "-c", str(node.config)], stdout=log, stderr=subprocess.STDOUT
                )
        deadline = time.monotonic() + START_TIMEOUT
        for node in self.nodes:
            while not port_open(node.port):
                self._check(node, deadline)
                time.sleep(0.05)
        while not run_async(self._jetstream_ready(), timeout=10):
            self._check(self.nodes[0], deadline)
            time.sleep(0.2)
        return self

    def _check(self, node: Node, deadline: float) -> None:
        assert node.proc is not None
        if node.proc.poll() is not None or time.monotonic() > deadline:
            tail = node.log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"nats-server {node.name} did not start:\n{tail}")

    async def _jetstream_ready(self) -> bool:
        nc = await nats.connect(self.url.split(","), connect_timeout=2, allow_reconnect=False)
        try:
            await nc.jetstream().account_info()
            return True
        except Exception:  # no meta leader yet
            return False
        finally:
            await nc.close()

    def kill(self, index: int) -> Node:
        """SIGKILL node ``index``; the node."""
        node = self.nodes[index]
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait(5)
        return node

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(5)


@contextlib.contextmanager
def running_cluster(root: Path, size: int = 3) -> Iterator[NatsCluster]:
    """A started cluster under ``root``, stopped on exit."""
    cluster = NatsCluster(root, size)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
