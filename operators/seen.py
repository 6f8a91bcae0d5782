"""Seen: ``!seen NICK`` tells when NICK last spoke, where, and what they said.

It reads every chat line (``{p}.chat.in.>``) and keeps, per platform, network and lowercased
nick, the last time, room and text in its key-value bucket (``eevee_<id>``, key
``seen.<platform>.<network>.<nick>``, each part made safe for KV keys by :func:`kv_token`,
which also bounds it: a nick of kilobytes becomes a readable head and a digest), so it
remembers across restarts. Private messages are not recorded (what is said to the bot alone
is nobody else's business). Run it under ``eevee up`` (``module = "operators.seen"``, next to
``operators.router``) or alone::

    python -m operators.seen --id seen --nats-url nats://127.0.0.1:4222

Answers: ``alice was last seen 5 minutes ago in #ops, saying: hello`` or
``I have not seen bob.``
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from eeveepy import ChatMessage, CommandInvocation, Envelope, Operator
from eeveepy.errors import StoreError
from eeveepy.protocol.models import MessageStyle
from eeveepy.protocol.tokens import kv_token

KV_PREFIX = "seen."
"""Keys: ``seen.<platform>.<network>.<nick>``, each part a :func:`kv_token`."""


class SeenSettings(BaseModel):
    """Settings of the seen operator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_text: int = Field(default=200, ge=0)
    """Characters of the last line kept (longer lines are cut, with an ellipsis)."""


class Sighting(BaseModel):
    """What is stored for a nick."""

    nick: str
    room: str
    text: str
    time: datetime
    action: bool = False


STOP_WAIT = 2.0
"""Seconds a stopping operator waits for the sightings still being written."""


def seen_key(platform: str, network: str, nick: str) -> str:
    """The KV key of ``nick`` (case-insensitive) on a network."""
    return KV_PREFIX + ".".join(kv_token(p) for p in (platform, network, nick.lower()))


def ago(seconds: float) -> str:
    """``just now``, ``42 seconds ago``, ``5 minutes ago``, ``1 hour ago``, ``3 days ago``."""
    seconds = max(0, int(seconds))
    if seconds < 10:
        return "just now"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'' if n == 1 else 's'} ago"
    return "just now"  # pragma: no cover - seconds >= 10 always has a unit


def describe(sighting: Sighting, now: datetime) -> str:
    """The answer to ``!seen`` for a stored sighting."""
    when = ago((now - sighting.time).total_seconds())
    said = f"saying: {sighting.text}"
    if sighting.action:
        said = f"doing: * {sighting.nick} {sighting.text}"
    return f"{sighting.nick} was last seen {when} in {sighting.room}, {said}"


class LatestWrites:
    """The newest sighting of each key, written one write at a time per key.

    A burst from one nick is one write in flight and the newest value waiting, not one
    store round trip per line in series: the handler hands the value over and returns. A write
    the store does not take now is kept and retried by ``op.store`` (which reports it).
    """

    def __init__(self, op: Operator[SeenSettings]) -> None:
        self._op = op
        self._waiting: dict[str, bytes] = {}
        self._writers: dict[str, asyncio.Task[None]] = {}

    def latest(self, key: str) -> bytes | None:
        """The value waiting to be written at ``key``, if any (newer than the store's)."""
        return self._waiting.get(key)

    def put(self, key: str, value: bytes) -> None:
        """Write ``value`` at ``key`` soon (replacing a value of the key still waiting)."""
        self._waiting[key] = value
        if key not in self._writers:
            task = asyncio.get_running_loop().create_task(self._write(key))
            self._writers[key] = task

    async def _write(self, key: str) -> None:
        try:
            while (value := self._waiting.pop(key, None)) is not None:
                await self._op.store.put(key, value)
        except Exception as exc:  # never let one sighting end the writes
            self._op.log.error("sighting not written", key=key, error=repr(exc))
        finally:
            del self._writers[key]

    async def finish(self) -> None:
        """Wait (bounded) for the writes under way (the operator is stopping)."""
        if self._writers:
            await asyncio.wait(list(self._writers.values()), timeout=STOP_WAIT)


def create() -> Operator[SeenSettings]:
    """Build the seen operator (nothing runs until ``run()`` or ``serve()``)."""
    op = Operator(SeenSettings, name="seen")

    writes = LatestWrites(op)

    @op.on_start
    async def open_store() -> None:
        await op.kv()  # no store, no point: a failure here fails the start

    op.on_stop(writes.finish)

    @op.ipc.subscribe("chat.in.>")
    async def on_chat(env: Envelope[ChatMessage]) -> None:
        msg = env.body
        if msg.private or msg.style is MessageStyle.NOTICE:
            return
        limit = op.settings.max_text
        text = msg.text if len(msg.text) <= limit else msg.text[: max(0, limit - 1)] + "…"
        sighting = Sighting(
            nick=msg.user.name or msg.user.id,
            room=msg.room,
            text=text,
            time=min(env.timestamp, datetime.now(UTC)),
            action=msg.style is MessageStyle.ACTION,
        )
        value = sighting.model_dump_json().encode()
        # By id (the IRC nick, the Matrix user id...) and by display name when it differs.
        for nick in dict.fromkeys(n.lower() for n in (msg.user.id, msg.user.name) if n):
            writes.put(seen_key(msg.platform, msg.network, nick), value)

    @op.command(
        "seen",
        usage="!seen NICK",
        help="When NICK last said something here, and what.",
        pattern=r"\s*(?P<nick>\S+)\s*",
    )
    async def seen(inv: CommandInvocation) -> str:
        nick = inv.args["nick"].rstrip("?!.,:;") or inv.args["nick"]  # `!seen alice?`
        msg = inv.message
        if nick.lower() in (msg.user.id.lower(), msg.user.name.lower()):
            return f"you are right here, {msg.user.name}."
        try:
            key = seen_key(msg.platform, msg.network, nick)
            value = writes.latest(key) or await op.store.get(key)
        except StoreError:
            return "I cannot look that up right now (the store is unavailable)."
        if value is None:
            return f"I have not seen {nick}."
        try:
            sighting = Sighting.model_validate_json(value)
        except ValueError:
            op.log.warning("unreadable sighting dropped", nick=nick)
            return f"I have not seen {nick}."
        return describe(sighting, datetime.now(UTC))

    return op


def main() -> None:
    """Run the seen operator as a process."""
    create().run()


if __name__ == "__main__":
    main()
