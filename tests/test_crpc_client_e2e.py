"""ChatOps RPC client end to end: the console connector, the router and the crpc operator as
processes on the real nats-server, a CRPC server on loopback (aiohttp.web) that checks every
signature. No HTTP is mocked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from eeveepy.console import ChatSession
from tests.crpc_fixtures import CrpcChat, CrpcTestServer, console_user, crpc_chat


@pytest_asyncio.fixture
async def server() -> AsyncIterator[CrpcTestServer]:
    srv = CrpcTestServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest_asyncio.fixture
async def chat(nats_url: str, tmp_path: Path) -> AsyncIterator[CrpcChat]:
    async with crpc_chat(nats_url, tmp_path) as chat:
        yield chat


async def test_add_call_poll_timeout_down_restart_remove(
    chat: CrpcChat, server: CrpcTestServer
) -> None:
    await chat.start_crpc()
    await chat.until("!help", "rpc")

    # add: polled at once, the answer says what was found
    added = await chat.ask(f"!rpc add {server.base} --prefix ops")
    assert added.startswith(f"Okay, I'll poll {server.base} for chatops with the prefix `ops`")
    assert "Found 2 methods." in added, added
    assert server.seen[0].method == "GET"
    assert server.seen[0].keyid == "eeveetest"

    # the prefix alone: the namespace's help; !help lists the prefix
    assert (
        await chat.until("!ops", "!ops wcid [APP]")
        == "!ops: Deploy things.\n!ops wcid [APP]\n!ops slow"
    )
    assert "ops" in (await chat.ask("!help")).split("commands: ")[1]

    # a method with a named capture and --long-args; the server verified the signature
    answer = await chat.ask("!ops where can i deploy hubot --fruit apple --vegetable green celery")
    assert answer == "alice may deploy hubot in #ops with apple and green celery"
    post = [s for s in server.seen if s.method == "POST"][-1]
    assert post.path == "/_chatops/wcid"
    assert post.body == {
        "user": "alice",
        "room_id": "#ops",
        "method": "wcid",
        "params": {"app": "hubot", "fruit": "apple", "vegetable": "green celery"},
    }
    assert server.refused == []
    assert "no `ops` method matches `please wcid`" in await chat.ask("!ops please wcid")

    # a slow server: the timeout message, the command does not hang
    slow = await chat.ask("!ops slow", timeout=5.0)
    assert slow == (
        "alice: the deploy server is unhappy "
        f"(`!ops slow` timed out: {server.base}/slow gave no answer within 1 s)"
    ), chat.crpc.log() if chat.crpc else ""

    # a listing change is picked up by polling
    server.methods["quiet"] = {"regex": "quiet", "path": "quiet", "help": "quiet"}
    await chat.until("!ops", "!ops quiet")
    assert await chat.ask("!ops quiet") == "`!ops quiet` returned no output"

    # the server down: the listing's error_response, and the last good listing stays
    await server.stop()
    assert await chat.ask("!ops wcid web") == "alice: the deploy server is unhappy"
    listed = await chat.until("!rpc list", "Connect")
    assert f"{server.base} (prefix: ops)" in listed

    # the endpoints survive an operator restart (the listing with them)
    assert chat.crpc is not None
    await chat.crpc.stop()
    chat.system.procs.remove(chat.crpc)
    await chat.start_crpc()
    await server.start()  # same port
    assert await chat.until("!ops wcid web", "may deploy") == "alice may deploy web in #ops"

    # removal: polling stops and the command is gone
    assert "no longer poll" in await chat.ask(f"!rpc remove {server.base}")
    await chat.until("!ops wcid web", "unknown command `ops`")
    gets = server.gets()
    await asyncio.sleep(1.0)  # three poll intervals
    assert server.gets() == gets
    assert "I poll no ChatOps RPC endpoints" in await chat.ask("!rpc list")


async def test_rpc_commands_checks_and_permissions(chat: CrpcChat, server: CrpcTestServer) -> None:
    await chat.start_crpc()
    await chat.until("!help", "rpc")
    assert "prefix" in await chat.ask(f"!rpc add {server.base}")
    assert "allow_plaintext" in await chat.ask("!rpc add http://192.0.2.1/_chatops --prefix x")
    assert "cannot be a prefix" in await chat.ask(f"!rpc add {server.base} --prefix rpc")
    assert "Okay" in await chat.ask(f"!rpc add {server.base}/ --prefix ops")
    other = f"http://127.0.0.1:{server.port}/other"
    assert await chat.ask(f"!rpc add {other} --prefix ops") == (
        f"Sorry, ops is already associated with {server.base}"
    )
    assert "Info for" in await chat.ask(f"!rpc debug {server.base}")
    assert (await chat.ask(f"!rpc debug {other}")).startswith(f"I'm not polling {other}")
    assert (await chat.ask(f"!rpc remove {other}")).startswith(f"I'm not polling {other}")
    assert "'deploy' as a prefix" in await chat.ask(f"!rpc set prefix {server.base} deploy")
    await chat.until("!deploy wcid x", "may deploy x")
    await chat.until("!ops wcid x", "unknown command `ops`")
    assert "Found 2 methods." in await chat.ask("!rpc reload")
    assert (await chat.ask("!rpc frobnicate")).startswith("usage: rpc add URL")

    # rpc is for admins only; the methods are for everyone
    bob = ChatSession(chat.system.io, user=console_user("bob"), network="kit", room="#ops")
    await bob.start()
    try:
        other_user = CrpcChat(chat.system, bob)
        assert await other_user.ask("!rpc list") == "you are not allowed to run `rpc`"
        assert await other_user.ask("!deploy wcid y") == "bob may deploy y in #ops"
    finally:
        await bob.close()
