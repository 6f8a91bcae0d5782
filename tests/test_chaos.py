"""Chaos: the router, the command operator and the bus SIGKILLed at random during traffic.

A whole system under ``eevee up`` (embedded bus, router, echo); this test plays a connector on
its own thread: it stores ``!echo N`` lines on ``chat.in`` at a steady pace and takes its
``chat.out`` as a connector does (fast path plus its durable consumer on the chat output
stream, one message per envelope id). Meanwhile the main thread kills the router, echo and
the nats-server in a random order at random moments. Afterwards every command must have been
answered exactly once: with its echo, or with a failure told to the user.

The order and moments come from a seed printed on failure; ``EEVEE_CHAOS_SEED=N`` replays one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from eeveepy.bus.client import BusConfig, barrier, connect
from eeveepy.bus.ipc import Ipc
from eeveepy.protocol.models import ChatMessage, ChatUser, Envelope, OutgoingMessage
from eeveepy.protocol.subjects import Subjects
from tests.supervisor_fixtures import System, system_factory, wait_for

COMMANDS = 500
PACE = 0.006
"""Seconds between two commands: the traffic lasts about 3 s."""


class Connector(threading.Thread):
    """The test's connector: sends the commands, collects the answers (own event loop)."""

    def __init__(self, state: dict[str, Any]) -> None:
        super().__init__(name="chaos-connector", daemon=True)
        self.state = state
        self.sent: list[str] = []
        self.answers: dict[str, Envelope[OutgoingMessage]] = {}
        self.error: BaseException | None = None
        self.started_sending = threading.Event()

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc

    async def _main(self) -> None:
        cfg = BusConfig(url=self.state["url"])
        nc = await connect(
            cfg, name="chaos", user=self.state.get("user"), password=self.state.get("password")
        )
        ipc = Ipc(Subjects(self.state.get("prefix") or "eevee"), "irc.chaos")
        await ipc.attach(nc)
        out = ipc.subjects.chat_out("irc", "chaos")

        changed = asyncio.Event()

        async def on_out(env: Envelope[OutgoingMessage]) -> None:
            self.answers.setdefault(env.id, env)
            changed.set()

        await ipc.subscribe(out, on_out)
        await ipc.subscribe(out, on_out, durable="out_irc_chaos", backstop=True)
        await barrier(nc)
        inbound = ipc.subjects.chat_in("irc", "chaos", "#chaos")
        self.started_sending.set()
        for n in range(COMMANDS):
            msg = ChatMessage(
                platform="irc",
                network="chaos",
                room="#chaos",
                user=ChatUser(id="carol", name="carol"),
                text=f"!echo {n}",
                message_id=f"c{n}",
            )
            await ipc.publish_stored(inbound, msg, deadline=60)
            self.sent.append(msg.message_id or "")
            await asyncio.sleep(PACE)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while set(self.sent) - self.answered() and loop.time() < deadline:
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 1.0)
        await asyncio.sleep(1.5)  # room for a late repeat
        await ipc.detach()
        await nc.close()

    def answered(self) -> set[str]:
        return {env.body.reply_to or "" for env in list(self.answers.values())}


def _bus_pid(system: System) -> int:
    for proc in system.collect():
        try:
            if proc.name() == "nats-server":
                return proc.pid
        except psutil.Error:
            continue
    raise AssertionError("no nats-server among the supervisor's children")


def _kill(system: System, victim: str) -> None:
    if victim == "bus":
        pid = _bus_pid(system)
    else:
        pid = system.wait_op(victim, lambda s: s["state"] == "RUNNING" and s["pid"])["pid"]
    os.kill(pid, signal.SIGKILL)


def test_random_kills_during_traffic_lose_no_command(tmp_path: Path) -> None:
    seed = int(os.environ.get("EEVEE_CHAOS_SEED") or time.time_ns() % 1_000_000)
    rng = random.Random(seed)
    victims = ["router", "echo", "bus"]
    rng.shuffle(victims)
    pauses = [rng.uniform(0.2, 0.9) for _ in victims]
    with system_factory(tmp_path) as make:
        system = make().write(
            {
                "router": {"module": "operators.router", "settings": {"timeout": 3.0}},
                "echo": {"module": "operators.echo"},
            }
        )
        system.up("router", "echo", timeout=30)
        state = json.loads(system.state_file.read_text(encoding="utf-8"))
        connector = Connector(state)
        connector.start()
        assert connector.started_sending.wait(15), f"connector did not start: {connector.error}"
        for victim, pause in zip(victims, pauses, strict=True):
            time.sleep(pause)
            _kill(system, victim)
        connector.join(120)
        what = f"seed {seed}, kills {list(zip(victims, pauses, strict=True))}"
        assert not connector.is_alive(), f"{what}: the connector did not finish"
        assert connector.error is None, f"{what}: {connector.error!r}"
        assert len(connector.sent) == COMMANDS, what
        counts = Counter(env.body.reply_to for env in connector.answers.values())
        lost = [mid for mid in connector.sent if counts[mid] == 0]
        twice = {mid: counts[mid] for mid in connector.sent if counts[mid] > 1}
        log = system.log()[-3000:]
        assert not lost, f"{what}: {len(lost)} never answered: {lost[:10]}\n{log}"
        assert not twice, f"{what}: answered twice: {list(twice)[:10]}\n{log}"
        echoed = sum(1 for env in connector.answers.values() if env.body.text.isdigit())
        assert echoed >= COMMANDS // 2, f"{what}: only {echoed} echoed"  # failures stay rare
        wait_for(lambda: system.status(), 10, what="the supervisor to answer after the chaos")
