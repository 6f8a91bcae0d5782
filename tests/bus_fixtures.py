"""The test's own bus connection under a subject prefix of its own, shared by test modules."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from eeveepy.bus.client import BusConfig, barrier, connect
from eeveepy.bus.ipc import Ipc
from eeveepy.protocol.models import Body, Envelope
from eeveepy.protocol.subjects import Subjects


@dataclass
class PrefixedBus:
    """One connection and its :class:`Ipc`, publishing as :attr:`SOURCE`; ``start`` then
    ``close``. Subclasses add what their tests need."""

    SOURCE: ClassVar[str] = "test"

    url: str
    tmp: Path
    prefix: str = field(default_factory=lambda: "t" + uuid.uuid4().hex[:12])
    ipc: Ipc | None = None

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.prefix)

    @property
    def io(self) -> Ipc:
        assert self.ipc is not None
        return self.ipc

    async def start(self) -> None:
        self.ipc = Ipc(self.subjects, self.SOURCE)
        await self.ipc.attach(await connect(BusConfig(url=self.url), name="test"))

    async def close(self) -> None:
        if self.ipc is not None and self.ipc.connected:
            nc = self.ipc.nc
            await self.ipc.detach()
            await nc.close()

    async def collect(self, subject: str, model: type[Body]) -> asyncio.Queue[Envelope[Any]]:
        """Every envelope on ``subject`` from now on, its body validated as ``model``."""
        queue: asyncio.Queue[Envelope[Any]] = asyncio.Queue()

        async def handler(env: Envelope[Any]) -> None:
            await queue.put(env.model_copy(update={"body": model.model_validate(env.body)}))

        await self.io.subscribe(subject, handler)
        await barrier(self.io.nc)
        return queue
