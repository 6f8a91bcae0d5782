"""The delivery guarantee of chat input kept by the connector, for the journal tier: no stream.

:class:`Journal`: each line is appended to a file in the connector's working directory (one
``write()``, no fsync, as eeveepy's ``chat-out-sent``) and sent as a plain publish with a
reply subject. The router answers it (``taken``) once the command's result is in, or at once
for a line that is no command; the connector then appends the line's ``done``. A line not
answered within ``RESEND`` seconds is sent again by a periodic sweep, and so is every line the
file has without its ``done`` when the connector starts (the router's run-once memory makes a
repeat harmless).

The file's records, one a line: ``+ ID SUBJECT PAYLOAD`` (the envelope as sent: JSON, no
newline in it) and ``- ID``. The file is never compacted here (a benchmark's run is short);
a connector of this design would rewrite it with its undone lines from time to time, as
eeveepy's ``chat-out-sent`` is compacted.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

from nats.aio.client import Client
from nats.aio.msg import Msg

__all__ = ["RESEND", "SWEEP", "TAKEN", "Journal", "undone"]

RESEND = 5.0
"""Seconds a line may go unanswered before it is sent again (eeveepy's ``ACK_WAIT``)."""
SWEEP = 1.0
"""Seconds between the resend sweeps (one timer for all lines, not one per line)."""
TAKEN = b"taken"
"""The router's answer to a line it is done with."""


def undone(path: Path) -> dict[str, tuple[str, bytes]]:
    """The lines of the journal at ``path`` without their ``done``: id -> (subject, payload)."""
    lines: dict[str, tuple[str, bytes]] = {}
    if not path.exists():
        return lines
    for record in path.read_bytes().splitlines():
        if record.startswith(b"+ "):
            msg_id, subject, payload = record[2:].split(b" ", 2)
            lines[msg_id.decode()] = (subject.decode(), payload)
        elif record.startswith(b"- "):
            lines.pop(record[2:].decode(), None)
    return lines


class Journal:
    """The connector's journal of chat input, and the lines it has sent and not seen taken."""

    def __init__(self, nc: Client, path: Path, resend: float = RESEND) -> None:
        self.nc, self.path, self.resend = nc, path, resend
        self.inbox = nc.new_inbox()
        self.count = itertools.count()
        self.waiting: dict[str, tuple[str, str, bytes, float]] = {}
        """reply subject -> (line id, subject, payload, when sent)."""
        self.fd = -1

    async def start(self) -> asyncio.Task[None]:
        """Take the router's answers, send again what the file left undone, sweep from now."""
        left = undone(self.path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        await self.nc.subscribe(self.inbox + ".*", cb=self._taken)
        for msg_id, (subject, payload) in left.items():
            await self._send(msg_id, subject, payload)
        return asyncio.get_running_loop().create_task(self._sweep())

    async def publish(self, subject: str, payload: bytes, msg_id: str) -> None:
        """Write the line down, then send it."""
        os.write(self.fd, b"+ %s %s %s\n" % (msg_id.encode(), subject.encode(), payload))
        await self._send(msg_id, subject, payload)

    async def _send(self, msg_id: str, subject: str, payload: bytes) -> None:
        reply = f"{self.inbox}.{next(self.count)}"
        self.waiting[reply] = (msg_id, subject, payload, asyncio.get_running_loop().time())
        await self.nc.publish(subject, payload, reply=reply)

    def close(self) -> None:
        """Close the file (the sweep's task is the caller's to cancel)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    async def _taken(self, msg: Msg) -> None:
        line = self.waiting.pop(msg.subject, None)
        if line is None:
            return
        if msg.data == TAKEN:
            os.write(self.fd, b"- %s\n" % line[0].encode())
        else:  # not taken: the sweep sends it again
            self.waiting[msg.subject] = line

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(SWEEP, self.resend))
            old = loop.time() - self.resend
            late = [reply for reply, line in self.waiting.items() if line[3] < old]
            for reply in late:
                msg_id, subject, payload, _ = self.waiting.pop(reply)
                await self._send(msg_id, subject, payload)
