"""The ChatOps RPC server under a real ``eevee up``: its bus grants are enough, and no more.

One system for the module: the router (denying ``echo`` to ``crpc:*:mallory``), echo, and
the server in a test operator (tests/operators/crpc_server_op.py) given exactly the extra
subjects ``operators.crpc`` gets by default (eeveepy/config/roles.py), under the broker's
permissions. If a grant were missing, the listing would stay empty (a refused subscription)
or calls would answer nothing (a refused publish).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from supervisor_fixtures import System, system_factory

from eeveepy.config.roles import default_extras
from operators.crpc import signing

DATA = Path(__file__).resolve().parent / "data" / "crpc"
SERVER_OP = Path(__file__).resolve().parent / "operators" / "crpc_server_op.py"
BASE = "http://eevee.test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[System, int]]:
    port = _free_port()
    publish, subscribe = default_extras("operators.crpc")
    server = {
        "port": port,
        "base_urls": [BASE],
        "public_key_file": str(DATA / "sample_client_public.pem"),
        "timeout": 5.0,
    }
    with system_factory(tmp_path_factory.mktemp("crpcbus")) as make:
        s = make()
        s.write(
            {
                "router": {
                    "module": "operators.router",
                    "settings": {"rules": {"echo": {"deny": ["crpc:*:mallory"]}}},
                },
                "echo": {"module": "operators.echo"},
                "crpcsrv": {
                    "command": [sys.executable, str(SERVER_OP)],
                    "role": "command",
                    "publish": list(publish),
                    "subscribe": list(subscribe),
                    "settings": {"server": server},
                },
            }
        )
        yield s.up("router", "echo", "crpcsrv"), port


async def _send(port: int, path: str = "", body: dict[str, Any] | None = None) -> Any:
    key = signing.load_private_key(signing.read_pem(file=DATA / "sample_client_private.pem"))
    data = json.dumps(body).encode() if body is not None else b""
    headers = signing.sign_headers(key, "rsakey1", f"{BASE}/_chatops{path}", data)
    url = f"http://127.0.0.1:{port}/_chatops{path}"
    async with aiohttp.ClientSession() as http:
        if body is None:
            request = http.get(url, headers=headers)
        else:
            request = http.post(url, data=data, headers=headers)
        async with request as response:
            return response.status, await response.json()


async def test_the_default_grants_serve_and_run_commands(system: tuple[System, int]) -> None:
    sys_, port = system
    deadline = time.monotonic() + 15
    while True:  # the registrations come after the server's command.sync
        status, listing = await _send(port)
        assert status == 200, listing
        if "echo" in listing["methods"]:
            break
        assert time.monotonic() < deadline, f"echo never listed\n{sys_.log()[-3000:]}"
        await asyncio.sleep(0.2)
    call = {"user": "alice", "room_id": "#ops", "params": {"args": "through the bus"}}
    status, body = await _send(port, "/echo", call)
    assert (status, body.get("result")) == (200, "through the bus"), sys_.log()[-3000:]
    status, body = await _send(port, "/echo", {**call, "user": "mallory"})
    assert (status, body["error"]["message"]) == (403, "you are not allowed to run `echo`")
    assert "Permissions Violation" not in sys_.log()
