"""An external bus: an nkey seed and TLS against real nats-server processes, and what the
supervisor hands its operators and the CLI (seed URLs, TLS and login files)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nkeys
import pytest

from eeveepy.bus.client import BusConfig, connect
from eeveepy.bus.natsconf import find_nats_server
from eeveepy.config import Config
from eeveepy.errors import BusError
from eeveepy.paths import OperatorPaths
from eeveepy.runtime.contract import Launch
from eeveepy.supervisor.boot import Bus, BusUsers
from eeveepy.supervisor.environ import operator_env, state_of
from tests.irc_servers import free_port, make_cert, port_open


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    """``start(config_text) -> port``: nats-server processes stopped at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(text: str) -> int:
        port = free_port()
        conf = tmp_path / f"nats-{port}.conf"
        conf.write_text(f"listen: 127.0.0.1:{port}\n{text}")
        log = (tmp_path / f"nats-{port}.log").open("wb")
        proc = subprocess.Popen([str(find_nats_server()), "-c", str(conf)], stdout=log, stderr=log)
        procs.append(proc)
        deadline = time.monotonic() + 10
        while not port_open(port):
            assert proc.poll() is None, (tmp_path / f"nats-{port}.log").read_text()
            assert time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.05)
        return port

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


async def test_an_nkey_seed_logs_in(server: Any, tmp_path: Path) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    port = server(f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n')
    seed_file = tmp_path / "eevee.nk"
    seed_file.write_bytes(seed + b"\n")
    url = f"nats://127.0.0.1:{port}"
    with pytest.raises(BusError, match="cannot connect"):
        await connect(BusConfig(url=url, connect_timeout=2), name="t", reconnect=False)
    nc = await connect(BusConfig(url=url, nkey_seed=seed_file), name="t")
    await nc.close()
    # An operator gets the seed file through its environment.
    launch = Launch.from_env(
        {"EEVEE_OPERATOR_ID": "x", "EEVEE_NATS_URL": url, "EEVEE_NATS_NKEY_SEED": str(seed_file)}
    )
    nc = await connect(launch.bus_config(), name="op", url=launch.nats_url)
    await nc.close()


async def test_tls_with_a_ca_and_several_seeds(server: Any, tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    port = server(f'tls {{ cert_file: "{cert}"\n key_file: "{key}" }}\n')
    dead = free_port()  # a seed that is down: the next one is tried
    url = f"tls://127.0.0.1:{dead},tls://127.0.0.1:{port}"
    nc = await connect(BusConfig(url=url, tls_ca=cert), name="t")
    assert nc.connected_url is not None
    assert nc.connected_url.port == port
    await nc.close()
    with pytest.raises(BusError, match="cannot connect"):  # an unknown CA is refused
        await connect(BusConfig(url=url, connect_timeout=2), name="t", reconnect=False)


def _external(tmp_path: Path, **bus: Any) -> tuple[Config, Bus]:
    config = Config.model_validate(
        {
            "bus": {"url": "tls://n1:4222", "servers": ["tls://n2:4222"], **bus},
            "supervisor": {"name": "a"},
            "operators": {"echo": {"module": "operators.echo"}},
            "source": tmp_path / "eevee.toml",
        }
    )
    url = ",".join(config.bus.seeds)
    return config, Bus(url=url, nc=None, ipc=None, server=None)  # type: ignore[arg-type]


def test_operators_and_the_cli_get_the_seeds_and_files(tmp_path: Path) -> None:
    files = {k: tmp_path / f"{k}.pem" for k in ("tls_ca", "tls_cert", "tls_key")}
    config, bus = _external(tmp_path, nkey_seed=tmp_path / "eevee.nk", **files)
    paths = OperatorPaths("echo", tmp_path / "settings.json", tmp_path / "cache", tmp_path / "d")
    env = operator_env(
        config, config.operators["echo"], paths, name="a", bus=bus, users=BusUsers(), log=None
    )  # type: ignore[arg-type]
    assert env["EEVEE_NATS_URL"] == "tls://n1:4222,tls://n2:4222"
    assert env["EEVEE_NATS_TLS_CA"] == str(files["tls_ca"])
    assert env["EEVEE_NATS_TLS_CERT"] == str(files["tls_cert"])
    assert env["EEVEE_NATS_TLS_KEY"] == str(files["tls_key"])
    assert env["EEVEE_NATS_NKEY_SEED"] == str(tmp_path / "eevee.nk")
    assert "EEVEE_NATS_USER" not in env
    cfg = Launch.from_env(env).bus_config()
    assert (cfg.tls_ca, cfg.nkey_seed) == (files["tls_ca"], tmp_path / "eevee.nk")
    state = state_of(config, name="a", bus=bus, users=BusUsers(), started=datetime.now(UTC))
    assert state["url"] == "tls://n1:4222,tls://n2:4222"
    assert state["bus"]["tls_ca"] == str(files["tls_ca"])
    assert state["bus"]["nkey_seed"] == str(tmp_path / "eevee.nk")
    BusConfig(**state["bus"])  # what the CLI builds from it
