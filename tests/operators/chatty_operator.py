"""A test operator that logs: one warning at start, and optionally a flood of info lines.

Settings: ``flood`` (lines to log right after start, from a background task; 0 = none).
"""

from __future__ import annotations

import asyncio
import os

from eeveepy.runtime.operator import Operator


def main() -> None:
    op = Operator(name="chatty")
    tasks: set[asyncio.Task[None]] = set()

    async def flood(count: int) -> None:
        for i in range(count):
            op.log.info("flood line", n=i)
            if i % 1000 == 0:
                await asyncio.sleep(0)  # let pings through, as any handler would
        await asyncio.sleep(1)  # let the log writer catch up
        op.log.info("flood done", count=count)

    @op.on_start
    async def started() -> None:
        op.log.warning("hello from python", pid=os.getpid())
        count = int(op.settings.model_dump().get("flood", 0))
        if count:
            task = asyncio.get_running_loop().create_task(flood(count))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    op.run()


if __name__ == "__main__":
    main()
