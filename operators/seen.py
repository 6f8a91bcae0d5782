"""Seen: ``!seen NICK`` tells when NICK last spoke, where, and what they said.

It reads every chat line (``{p}.chat.in.>``) and keeps, per platform, network and lowercased
nick, the last time, room and text in its key-value bucket (``eevee_<id>``, key
``seen.<platform>.<network>.<nick>``, each part made safe for KV keys by :func:`kv_token`,
which also bounds it: a nick of kilobytes becomes a readable head and a digest), so it
remembers across restarts. Private messages are not recorded (what is said to the bot alone
is nobody else's business). Run it under ``eevee up`` (``module = "operators.seen"``, next to
``operators.router``) or alone::

    python -m operators.seen --id seen --nats-url nats://127.0.0.1:4222

Sightings are written to the store at most once a second per nick (``write_every``), the
newest one; ``!seen`` reads what waits before the store.

Answers: ``alice was last seen 5 minutes ago in #ops, saying: hello`` or
``I have not seen bob.``
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
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
    write_every: float = Field(default=1.0, ge=0, le=60, allow_inf_nan=False)
    """Seconds between the writes of a nick's newest sighting to the store: the lines in
    between cost no store write. A killed (not stopped) operator loses at most these
    seconds of sightings; 0 writes each as soon as the one before is stored."""


class Sighting(BaseModel):
    """What is stored for a nick."""

    nick: str
    room: str
    text: str
    time: datetime
    action: bool = False


STOP_WAIT = 2.0
"""Seconds a stopping operator waits for the sightings still being written."""
KEY_CACHE = 1024
"""Keys remembered for the nicks seen lately (the cache starts over when full)."""

Value = bytes | Callable[[], bytes]
"""A value to write: its bytes, or what makes them (called when it is written or read)."""


def _bytes(value: Value) -> bytes:
    return value if isinstance(value, bytes) else value()


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
    """The newest sighting of each key, written at most once every ``every()`` seconds.

    The handler hands the value over and returns. The first value waiting starts a timer; when
    it runs out, every key's newest value is written (one write per key, however many lines
    came in between), and the timer starts again if more came meanwhile. So a nick that
    speaks every second costs the store one write a second, not one per line; what waits is
    read by ``!seen`` through :meth:`latest`, and written at once when the operator stops (a
    killed process loses at most the last ``every()`` seconds of sightings). A write the store
    does not take now is kept and retried by ``op.store`` (which reports it).
    """

    def __init__(self, op: Operator[SeenSettings], every: Callable[[], float]) -> None:
        self._op = op
        self._every = every
        self._waiting: dict[str, Value] = {}
        self._writing: dict[str, Value] = {}
        self._task: asyncio.Task[None] | None = None

    def latest(self, key: str) -> bytes | None:
        """The value waiting (or being written) at ``key``, if any (newer than the store's)."""
        value = self._waiting.get(key) or self._writing.get(key)
        return None if value is None else _bytes(value)

    def put(self, key: str, value: Value) -> None:
        """Write ``value`` at ``key`` soon (replacing a value of the key still waiting): a
        value made by a call is made only if it is written (or read) before being replaced."""
        self._waiting[key] = value
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._waiting:
                await asyncio.sleep(self._every())
                await self._write_waiting()
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def _write_waiting(self) -> None:
        batch, self._waiting = self._waiting, {}
        self._writing = {**self._writing, **batch}
        try:
            await asyncio.gather(*(self._write(key, value) for key, value in batch.items()))
        finally:
            self._writing = {}

    async def _write(self, key: str, value: Value) -> None:
        try:
            await self._op.store.put(key, _bytes(value))
        except Exception as exc:  # never let one sighting end the writes
            self._op.log.error("sighting not written", key=key, error=repr(exc))

    async def finish(self) -> None:
        """Write what waits now, without the timer (bounded: the operator is stopping)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # A write cut short by the cancel is written again: a put is idempotent.
        self._waiting = {**self._writing, **self._waiting}
        self._writing = {}
        if self._waiting:
            await asyncio.wait([asyncio.ensure_future(self._write_waiting())], timeout=STOP_WAIT)


def create() -> Operator[SeenSettings]:
    """Build the seen operator (nothing runs until ``run()`` or ``serve()``)."""
    op = Operator(SeenSettings, name="seen")

    writes = LatestWrites(op, lambda: op.settings.write_every)
    keys: dict[tuple[str, str, str], str] = {}

    def key_of(platform: str, network: str, nick: str) -> str:
        """:func:`seen_key`, remembered for the nicks seen lately (most lines are theirs)."""
        key = keys.get((platform, network, nick))
        if key is None:
            if len(keys) >= KEY_CACHE:
                keys.clear()
            key = keys[platform, network, nick] = seen_key(platform, network, nick)
        return key

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
        when = min(env.timestamp, datetime.now(UTC))

        def value() -> bytes:  # made once a second at most: the newest line is written
            text = msg.text if len(msg.text) <= limit else msg.text[: max(0, limit - 1)] + "…"
            sighting = Sighting(
                nick=msg.user.name or msg.user.id,
                room=msg.room,
                text=text,
                time=when,
                action=msg.style is MessageStyle.ACTION,
            )
            return sighting.model_dump_json().encode()

        # By id (the IRC nick, the Matrix user id...) and by display name when it differs.
        for nick in dict.fromkeys(n.lower() for n in (msg.user.id, msg.user.name) if n):
            writes.put(key_of(msg.platform, msg.network, nick), value)

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
