"""eevee's server side called by eevee's client side: one crpc operator in both roles.

The operator serves the router's commands over ChatOps RPC on loopback and, as a client, adds
its own listing under a prefix: ``!eve echo hi`` goes console -> router -> crpc (client) ->
signed HTTP -> crpc (server) -> router -> echo, and echo's words come back the same way.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.crpc_fixtures import DATA, CrpcChat, crpc_chat


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest_asyncio.fixture
async def chat(nats_url: str, tmp_path: Path) -> AsyncIterator[CrpcChat]:
    async with crpc_chat(nats_url, tmp_path, echo=True) as chat:
        yield chat


async def test_the_client_calls_the_server_of_the_same_operator(chat: CrpcChat) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = {
        "port": port,
        "base_urls": [base],
        "public_key_file": str(DATA / "sample_client_public.pem"),
        "error_response": "eevee could not answer",
    }
    settings = CrpcChat.settings(timeout=5.0)
    chat.crpc = await chat.system.spawn(
        chat.crpc_id, "operators.crpc", {**settings, "server": server}
    )
    await chat.until("!help", "echo")

    # a prefix that is another operator's command: refused by the router, said in rpc list,
    # and echo keeps all of its invocations (crpc left echo's queue group at once)
    await chat.ask(f"!rpc add {base}/_chatops --prefix echo")
    await chat.until("!rpc list", "the router refused `echo`")
    for i in range(6):
        assert await chat.ask(f"!echo still echo {i}") == f"still echo {i}"
    moved = await chat.ask(f"!rpc set prefix {base}/_chatops eve")
    assert moved == f"Okay, I'll use 'eve' as a prefix for {base}/_chatops"
    assert "echo TEXT" in await chat.until("!eve", "echo TEXT")

    # a command through both sides, as alice in #ops, with its words intact
    assert await chat.until("!eve echo hi  there", "hi") == "hi  there"

    # the operator's own commands (rpc, the prefixes it calls) are not served back: no
    # remote client reaches rpc, and eve never calls itself in a loop (the router's
    # permissions for crpc users are tested in tests/test_crpc_server.py)
    listed = await chat.ask("!eve")
    assert "echo TEXT" in listed
    assert "rpc" not in listed.replace("ChatOps RPC", ""), listed
    refused = await chat.ask("!eve rpc list")
    assert refused == "no `eve` method matches `rpc list`; `!eve` lists them", refused
