"""A chat system for connector tests: the test's bus, the router and echo, and connectors.

:class:`ChatSystem` is a :class:`~tests.bus_fixtures.PrefixedBus` that starts operator
processes under its prefix (``python -m <module>`` with the process contract, waiting for
their Ready), with the helpers every connector's end-to-end test needs: start a connector of a
platform, collect its events, wait until the router knows ``echo``. Every process it started
is stopped by :meth:`close`.

    system = ChatSystem(nats_url, tmp, platform="xmpp")
    await system.start()
    await system.commands()                  # router + echo, echo registered
    proc = await system.connector("test", settings)     # xmpp.test
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from eeveepy.protocol.models import (
    ChatEvent,
    ChatMessage,
    ChatUser,
    Envelope,
    OutgoingMessage,
    Ready,
)
from tests.bus_fixtures import PrefixedBus
from tests.operator_procs import OperatorProc, contract_env, start_operator

WAIT = 10.0
"""Seconds to wait for an operator's Ready or for echo to be registered."""


@dataclass
class ChatSystem(PrefixedBus):
    """The test's bus under a prefix of its own, and the operator processes of the tests."""

    SOURCE: ClassVar[str] = "chattest"

    platform: str = "irc"
    """The platform of the connectors started by :meth:`connector`."""
    procs: list[OperatorProc] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    """More environment variables for every operator started (``EEVEE_LOOP``...)."""

    async def close(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.procs))
        self.procs.clear()
        await super().close()

    async def spawn(
        self, op_id: str, module: str, settings: dict[str, Any], **env_extra: str
    ) -> OperatorProc:
        """Start ``module`` as ``op_id`` with the process contract (``env_extra`` added to its
        environment); wait for its Ready."""
        env = contract_env(
            url=self.url,
            prefix=self.prefix,
            op_id=op_id,
            tmp=self.tmp,
            settings=settings,
            **{**self.env, **env_extra},
        )
        ready = await self.collect(self.subjects.operator_ready(op_id), Ready)
        child = await start_operator(module, env)
        self.procs.append(child)
        try:
            child.pid = (await asyncio.wait_for(ready.get(), WAIT)).body.pid
        except TimeoutError:
            await child.stop()
            raise AssertionError(f"{op_id}: no Ready\n{child.log()}") from None
        return child

    async def commands(self) -> None:
        """Start a router and echo, and wait until echo is registered."""
        await asyncio.gather(
            self.spawn("router." + uuid.uuid4().hex[:8], "operators.router", {}),
            self.spawn("echo", "operators.echo", {}),
        )
        await self.wait_echo_registered()

    async def connector(
        self, network: str, settings: dict[str, Any], **env_extra: str
    ) -> OperatorProc:
        """Start the platform's connector (``operators.<platform>``) as ``<platform>.<network>``."""
        p = self.platform
        return await self.spawn(f"{p}.{network}", f"operators.{p}", settings, **env_extra)

    async def events(self, network: str) -> asyncio.Queue[Envelope[ChatEvent]]:
        """Every ChatEvent the connector of ``network`` publishes from now on."""
        return await self.collect(f"chat.event.{self.platform}.{network}.>", ChatEvent)

    async def wait_echo_registered(self) -> None:
        """Ask ``help`` on a probe network until the router lists ``echo``."""
        answers = await self.collect("chat.out.probe.probe", OutgoingMessage)
        deadline = asyncio.get_running_loop().time() + WAIT
        msg = ChatMessage(
            platform="probe",
            network="probe",
            room="prober",
            user=ChatUser(id="prober", name="prober"),
            text="help",
            private=True,
        )
        while True:
            await self.io.publish(self.subjects.chat_in("probe", "probe", "prober"), msg)
            with contextlib.suppress(TimeoutError):
                if " echo" in (await asyncio.wait_for(answers.get(), 0.5)).body.text:
                    return
            logs = "\n".join(p.log() for p in self.procs)
            assert asyncio.get_running_loop().time() < deadline, f"echo never registered\n{logs}"


@contextlib.asynccontextmanager
async def running_system(url: str, tmp: Path, platform: str) -> AsyncIterator[ChatSystem]:
    """A started :class:`ChatSystem` with router and echo (echo registered), closed at exit."""
    system = ChatSystem(url, tmp, platform=platform)
    await system.start()
    try:
        await system.commands()
        yield system
    finally:
        await system.close()
