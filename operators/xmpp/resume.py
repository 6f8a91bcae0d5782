"""What a restarted connector needs to resume its XMPP stream: :class:`ResumeFile`.

A connector process that dies (killed, crashed) leaves its stream *hibernating* on the server:
stream management (XEP-0198) keeps the session, its rooms and every stanza sent to it for a
while (Prosody: 10 minutes by default). The process started in its place can resume that
session instead of opening a new one, and the server then replays what the dead one had not
handled, so nothing said to the bot while it was down is lost, and the bot never left its rooms.

For that the connector keeps, in its data directory, the stream's id, how many stanzas it has
handled (counted at receipt, saved only once the stanza was handled: a message stored on the
bus), how many it had sent, and the rooms it was in as of that stanza. The file is written
after each handled stanza (atomically: a new file renamed over the old), in a thread, so the
event loop never waits for the disk; a burst writes only its latest state. It is removed when
the session ends cleanly (a stopped connector said goodbye: there is nothing to resume).

The server must never have been told more than the file says: a resumption whose count is
below what the dead process acknowledged is refused (Prosody closes the connection), and the
session with whatever was said to the bot meanwhile is lost. So the stream acknowledges only
counts this file has written (``on_written``; see :meth:`XmppStream.acknowledge_up_to`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from operators.xmpp.muc import Muc, RoomState

__all__ = ["ResumeFile", "Saved"]

FILE: Final = "xmpp-stream.json"


@dataclass(frozen=True)
class Saved:
    """A stream as of its last handled stanza."""

    account: str
    sm_id: str
    handled: int
    sent: int
    rooms: list[dict[str, Any]] = field(default_factory=list)


def _room(data: dict[str, Any]) -> RoomState:
    occupants = data.get("occupants") or {}
    return RoomState(
        jid=str(data["jid"]),
        nick=str(data["nick"]),
        joined=bool(data.get("joined")),
        live=bool(data.get("live")),
        occupants={str(k): (str(v) if v else None) for k, v in occupants.items()},
    )


class ResumeFile:
    """The saved stream of one connector, at ``directory / FILE``."""

    def __init__(self, directory: Path, on_written: Callable[[int], None] | None = None) -> None:
        self.path = directory / FILE
        self.on_written = on_written
        """Called with the handled count of each state once it is on disk."""
        self._latest: tuple[str, int] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._cleared = False

    def load(self, account: str) -> tuple[Saved, list[RoomState]] | None:
        """The stream saved for ``account``, or None (none, another account's, unreadable)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            saved = Saved(**data)
            rooms = [_room(r) for r in saved.rooms]
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None
        if saved.account != account or not saved.sm_id:
            return None
        return saved, rooms

    def save(self, account: str, sm_id: str, handled: int, sent: int, muc: Muc) -> None:
        """Write the stream as of a stanza just handled (never raises: resuming is a bonus)."""
        rooms = [
            {k: v for k, v in asdict(s).items() if k not in ("password", "tried")}
            for s in muc.rooms.values()
            if s.joined
        ]
        self._latest = json.dumps(asdict(Saved(account, sm_id, handled, sent, rooms))), handled
        self._cleared = False
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_latest())

    async def _write_latest(self) -> None:
        while self._latest is not None:
            (text, handled), self._latest = self._latest, None
            written = await asyncio.to_thread(self._write, text)
            if written and not self._cleared and self.on_written is not None:
                self.on_written(handled)
        if self._cleared:  # cleared while a write was under way
            self._unlink()

    def _write(self, text: str) -> bool:
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            return False
        return True

    def clear(self) -> None:
        """Nothing to resume any more (the session ended cleanly, or could not be resumed)."""
        self._latest, self._cleared = None, True
        self._unlink()

    def _unlink(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
