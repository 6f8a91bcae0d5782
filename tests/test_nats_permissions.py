"""``eevee config nats-permissions`` and a system on an external server that installed it.

The printed block goes into a nats-server configuration as its administrator would put it;
``eevee up`` with the same ``[bus] users_file`` then runs with each operator as its own user,
and the permissions hold there as on the embedded server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from supervisor_fixtures import System, system_factory, wait_for

from eeveepy.bus.natsconf import find_nats_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def nats_server(conf: Path) -> Iterator[None]:
    proc = subprocess.Popen(
        [str(find_nats_server()), "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def configure(system: System, url: str) -> None:
    system.write(
        {
            "router": {"module": "operators.router", "settings": {"admins": ["console:*"]}},
            "echo": {"module": "operators.echo"},
            "console": {"module": "operators.console"},
        }
    )
    text = system.config.read_text(encoding="utf-8")
    system.config.write_text(
        f'[bus]\nurl = "{url}"\nusers_file = "bus-users.json"\n' + text, encoding="utf-8"
    )


def test_permissions_for_an_external_server(tmp_path: Path) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    with system_factory(tmp_path) as make:
        system = make()
        configure(system, url)
        first = system.cli("config", "nats-permissions")
        assert first.returncode == 0, first.stderr
        users_file = system.root / "bus-users.json"
        assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
        secrets = json.loads(users_file.read_text(encoding="utf-8"))
        assert set(secrets["operators"]) == {"router", "echo", "console"}
        block = first.stdout
        for secret in [secrets["supervisor"], secrets["cli"], *secrets["operators"].values()]:
            assert secret not in block
        assert block.count("$2a$") == 5
        assert '"op:echo"' in block
        assert '"eevee.command.register.echo"' in block
        again = system.cli("config", "nats-permissions")
        assert json.loads(users_file.read_text(encoding="utf-8")) == secrets  # kept
        assert again.returncode == 0

        conf = tmp_path / "nats.conf"
        store = tmp_path / "js"
        conf.write_text(
            f'port: {port}\nhost: "127.0.0.1"\njetstream {{ store_dir: "{store}" }}\n' + block,
            encoding="utf-8",
        )
        with nats_server(conf):
            wait_for(lambda: _accepts(port), 10, what="the external nats-server")
            system.up("router", "echo", "console")
            wait_for(lambda: system.cli("chat", input="!echo outside\n").stdout, 20)
            said = system.cli("chat", input="!echo outside\n")
            assert said.stdout.strip() == "outside", said.stderr
            echo = {"user": "op:echo", "password": secrets["operators"]["echo"]}
            refused = _publish_as(url, echo, "eevee.chat.in.console.local.#console")
            assert "permissions violation" in refused.lower()
            system.stop()


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def _publish_as(url: str, creds: dict[str, str], subject: str) -> str:
    async def go() -> str:
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False, **creds)
        try:
            await nc.publish(subject, b"{}")
            await nc.flush()
            for _ in range(40):
                if errors:
                    break
                await asyncio.sleep(0.05)
        finally:
            await nc.close()
        return " ".join(errors)

    return asyncio.run(go())


def test_without_a_users_file_it_says_where_to_put_it(tmp_path: Path) -> None:
    with system_factory(tmp_path) as make:
        system = make()
        system.write({"echo": {"module": "operators.echo"}})
        done = system.cli("config", "nats-permissions")
        assert done.returncode == 2
        assert "set [bus] users_file" in done.stderr
        renew = system.cli("config", "nats-permissions", "--users-file", "u.json")
        assert renew.returncode == 0, renew.stderr
        first = (system.root / "u.json").read_text(encoding="utf-8")
        system.cli("config", "nats-permissions", "--users-file", "u.json", "--renew")
        assert (system.root / "u.json").read_text(encoding="utf-8") != first


pytestmark = pytest.mark.timeout(120)
