"""A bot on a real bus, for testing an operator: :class:`TestBot` (errbot's ``testbot`` idea).

It starts an embedded nats-server in a temporary directory, serves the router and the
operator under test in this process with the process contract ``eevee up`` would give them,
and lets the test talk as a chat user::

    from eeveepy.testing import TestBot
    from greeter.operator import create

    async def test_greeter() -> None:
        async with TestBot(create(), settings={"greeting": "Hi"}) as bot:
            assert await bot.ask("!greeter bob") == "Hi, bob!"

Everything is real but the chat platform: the user's lines are chat messages on the bus, as a
connector publishes them (platform ``test``), and the answers are the outgoing messages the
operator sends back through the bus. Nothing is mocked, so a test that passes here passes
under ``eevee up``. The router is eevee's own (``operators.router``, installed with eeveepy).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from eeveepy.bus.client import BusConfig, barrier, connect
from eeveepy.bus.ipc import Ipc
from eeveepy.bus.natsserver import EmbeddedNats
from eeveepy.bus.streams import ensure_chat_streams
from eeveepy.errors import OperatorError
from eeveepy.protocol.models import ChatMessage, ChatUser, Envelope, OutgoingMessage, Ready
from eeveepy.protocol.subjects import Subjects
from eeveepy.runtime.commands import Commands
from eeveepy.runtime.contract import (
    ENV_CACHE_DIR,
    ENV_DATA_DIR,
    ENV_NATS_URL,
    ENV_OPERATOR_ID,
    ENV_SETTINGS,
    ENV_SUBJECT_PREFIX,
)
from eeveepy.runtime.operator import Operator

__all__ = ["PLATFORM", "TestBot"]

PLATFORM = "test"
"""The chat platform of a :class:`TestBot`'s users (network ``local``)."""
_NETWORK = "local"
_PREFIX = "test"
_QUIET = 0.3
"""Seconds without another reply after which an answer is taken as complete."""


class TestBot:
    """The operator under test, the router and a chat user on a real bus (see the module).

    ``settings`` are the operator's (its ``[operators.<id>]`` table's ``settings``);
    ``operator_id`` defaults to the operator's name; ``router`` are the router's settings
    (prefix ``!`` by default). ``timeout`` bounds every wait: a start, an answer.
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        operator: Operator[Any],
        *,
        settings: dict[str, Any] | None = None,
        operator_id: str | None = None,
        router: dict[str, Any] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.operator = operator
        self.operator_id = operator_id or operator.name or "operator"
        self.settings = settings or {}
        self.router_settings = router or {}
        self.timeout = timeout
        self.server: EmbeddedNats | None = None
        self.ipc = Ipc(Subjects(_PREFIX), "testbot")
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._tasks: list[tuple[Operator[Any], asyncio.Task[int]]] = []
        self._replies: asyncio.Queue[Envelope[OutgoingMessage]] = asyncio.Queue()
        self._count = 0

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the bus, the router and the operator; wait until its commands are known."""
        from operators.router import create as create_router  # eevee's own router

        self._tmp = tempfile.TemporaryDirectory(prefix="eevee-testbot-")
        root = Path(self._tmp.name)
        self.server = EmbeddedNats(store_dir=root / "nats")
        await self.server.start()
        nc = await connect(BusConfig(url=self.server.url), name="testbot")
        await self.ipc.attach(nc)
        await ensure_chat_streams(nc.jetstream(), _PREFIX)
        await self.ipc.subscribe(self.ipc.subjects.chat_out(PLATFORM, _NETWORK), self._on_reply)
        await self._serve(create_router(), "router", self.router_settings, root)
        await self._serve(self.operator, self.operator_id, self.settings, root)
        await self._until_registered()

    async def stop(self) -> None:
        """Stop the operator, the router and the bus (bounded). Idempotent."""
        for op, task in reversed(self._tasks):
            if not task.done():
                op.request_stop()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, self.timeout)
        self._tasks.clear()
        if self.ipc.connected:
            nc = self.ipc.nc
            with contextlib.suppress(Exception):
                await self.ipc.detach()
            with contextlib.suppress(Exception):
                await nc.close()
        server, self.server = self.server, None
        if server is not None:
            await server.stop()
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            tmp.cleanup()

    async def say(
        self,
        text: str,
        *,
        user: str = "alice",
        room: str = "#test",
        private: bool = False,
        wait: float | None = None,
    ) -> list[str]:
        """``user`` says ``text`` in ``room`` (or privately); the texts of every answer, in
        order. Waits up to ``wait`` seconds (default ``timeout``) for the first answer: to
        show that nothing answers, pass a short one. Empty when nothing answered."""
        self._count += 1
        msg = ChatMessage(
            platform=PLATFORM,
            network=_NETWORK,
            room=user if private else room,
            user=ChatUser(id=user, name=user),
            text=text,
            private=private,
            message_id=f"m{self._count}",
        )
        while not self._replies.empty():  # late answers to earlier lines are not this one's
            self._replies.get_nowait()
        trace = await self.ipc.publish(self.ipc.subjects.chat_in(PLATFORM, _NETWORK, msg.room), msg)
        texts: list[str] = []
        wait = self.timeout if wait is None else wait
        while True:
            try:
                env = await asyncio.wait_for(self._replies.get(), wait)
            except TimeoutError:
                return texts
            if env.trace == trace:
                texts.append(env.body.text)
                wait = _QUIET

    async def ask(self, text: str, **kwargs: Any) -> str:
        """:meth:`say`, expecting exactly one answer: its text."""
        texts = await self.say(text, **kwargs)
        if len(texts) != 1:
            raise AssertionError(f"{text!r}: expected one answer, got {texts!r}")
        return texts[0]

    # -- internals ---------------------------------------------------------------------------

    async def _on_reply(self, env: Envelope[OutgoingMessage]) -> None:
        await self._replies.put(env)

    async def _serve(
        self, op: Operator[Any], op_id: str, settings: dict[str, Any], root: Path
    ) -> None:
        assert self.server is not None
        ready: asyncio.Queue[Ready] = asyncio.Queue()

        async def on_ready(msg: Ready) -> None:
            await ready.put(msg)

        sub = await self.ipc.subscribe(self.ipc.subjects.operator_ready(op_id), on_ready)
        await barrier(self.ipc.nc)
        environ = {  # what `eevee up` gives an operator
            ENV_OPERATOR_ID: op_id,
            ENV_NATS_URL: self.server.url,
            ENV_SUBJECT_PREFIX: _PREFIX,
            ENV_SETTINGS: json.dumps(settings),
            ENV_CACHE_DIR: str(root / op_id / "cache"),
            ENV_DATA_DIR: str(root / op_id / "data"),
        }
        task = asyncio.get_running_loop().create_task(op.serve(environ), name=f"testbot:{op_id}")
        self._tasks.append((op, task))
        waiting = asyncio.ensure_future(ready.get())
        try:
            await asyncio.wait({task, waiting}, timeout=self.timeout, return_when="FIRST_COMPLETED")
        finally:
            waiting.cancel()
            await sub.unsubscribe()
        if task.done():
            raise OperatorError(f"{op_id} ended at start (exit code {task.result()}); see its log")
        if not waiting.done() or waiting.cancelled():
            raise OperatorError(f"{op_id} was not ready within {self.timeout:g} s")

    async def _until_registered(self) -> None:
        """Until the router lists the operator's commands in ``help`` (they registered)."""
        commands = self.operator.extensions.get(Commands)
        names = [r.name for r in commands.registrations()] if isinstance(commands, Commands) else []
        deadline = asyncio.get_running_loop().time() + self.timeout
        while names:
            listed = " ".join(await self.say("help", user="testbot-probe", private=True, wait=1))
            if all(name in listed for name in names):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise OperatorError(f"the router never listed {names}: they did not register")
            await asyncio.sleep(0.05)
