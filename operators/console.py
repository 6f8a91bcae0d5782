"""Console: the resident half of the connector of the ``console`` platform.

The console's users are ``eevee chat`` sessions (see :mod:`eeveepy.cli.chat` and "Console
connector" in docs/protocol.md). Each session publishes its user's lines itself, on
``{p}.chat.in.console.<network>.<room>``, and reads the bot's messages on
``{p}.chat.out.console.<network>``; nothing they say passes through this operator, so
``eevee chat`` works without it. This operator is what makes the console a connector like
the others, built on the connector kit (:mod:`eeveepy.connector`) like every chat connector:

- its platform's session is the bus itself, so it is "connected" as soon as it runs: it
  announces the network with a ``connected`` chat.event (user: the bot) on
  ``{p}.chat.event.console.<network>.connected``, and ``disconnected`` / ``connected`` when a
  reload changes the network;
- it receives ``{p}.chat.out.console.<network>`` like any connector (fast path and the chat
  output stream, :class:`~eeveepy.connector.outbox.Outbox`), so a malformed outgoing message
  is dead-lettered with the reason (``eevee sub 'dlq.>'``), what the bot says is logged at
  debug level and the stream does not keep the console's messages;
- it logs sessions joining and leaving the rooms (their ``join`` and ``part`` events), and
  answers ``chat.ctl`` ``names`` with the sessions seen joining a room since it started
  (``join``, ``part`` and ``nick`` are not supported: sessions choose their rooms);
- it has a place in ``eevee ps``.

Settings (:class:`eeveepy.cli.chat.ConsoleSettings`, read by ``eevee chat`` too): ``network``
(default ``"local"``) and ``bot_name`` (default ``"eevee"``). Run it under ``eevee up``
(``module = "operators.console"``) or alone for development::

    python -m operators.console --id console --nats-url nats://127.0.0.1:4222
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

from eeveepy import Operator
from eeveepy.connector import (
    ConnectionState,
    ControlRequest,
    Link,
    Outbound,
    Plan,
    Platform,
    Room,
    RoomAction,
    connector_operator,
)
from eeveepy.console import PLATFORM, ConsoleSettings
from eeveepy.protocol.models import (
    ChatEvent,
    ChatEventType,
    ChatUser,
    ConnectorControlResult,
    OutgoingMessage,
)
from eeveepy.protocol.subjects import encode_token


class ConsolePlatform(Platform[ConsoleSettings]):
    """The console as a platform of the connector kit: its session is the bus."""

    name: ClassVar[str] = PLATFORM
    session_fields: ClassVar[frozenset[str]] = frozenset()
    actions: ClassVar[frozenset[str]] = frozenset({RoomAction.USERS})

    def __init__(self) -> None:
        self._link: Link | None = None
        self._present: dict[str, dict[str, str]] = {}
        """Per room, the sessions in it: user id -> name."""

    def plan(self, settings: ConsoleSettings, operator_id: str) -> Plan:
        return Plan(network=settings.network)

    def fold(self, name: str) -> str:
        return name

    def check(self, req: ControlRequest) -> str | None:
        return None

    async def session(self, settings: ConsoleSettings, link: Link) -> None:
        self._link = link
        self._present = {}
        name = settings.bot_name
        link.me = ChatUser(id=name, name=name)
        events = link.subjects.pattern(f"chat.event.{PLATFORM}.{encode_token(link.network)}.*")
        async with link.ipc.subscribe(events, self.on_event):
            link.state(ConnectionState.CONNECTED)
            await asyncio.Event().wait()  # the bus is the session: it ends when cancelled

    async def join(self, rooms: Sequence[Room]) -> None:
        """Nothing to join: sessions choose their rooms."""

    def render(self, out: OutgoingMessage) -> list[Outbound]:
        return [Outbound(out.target, out.text, kind=out.style.value, private=out.private)]

    async def send(self, item: Outbound) -> None:
        if self._link is not None:
            self._link.log.debug(
                "bot says", target=item.target, private=item.private, text=item.text
            )

    async def control(self, req: ControlRequest, link: Link) -> ConnectorControlResult:
        users = sorted(self._present.get(req.room or "", {}).values())
        return req.ok(f"{len(users)} users", users=users)

    async def goodbye(self) -> None:
        """Nothing to say: sessions see the operator in ``eevee ps``."""

    async def on_event(self, ev: ChatEvent) -> None:
        """Keep and log the sessions joining and leaving rooms."""
        if ev.user is None or ev.event not in (ChatEventType.JOIN, ChatEventType.PART):
            return
        room = self._present.setdefault(ev.room or "", {})
        if ev.event is ChatEventType.JOIN:
            room[ev.user.id] = ev.user.name
        else:
            room.pop(ev.user.id, None)
        if self._link is not None:
            what = "session joined" if ev.event is ChatEventType.JOIN else "session left"
            self._link.log.info(what, user=ev.user.name, user_id=ev.user.id, room=ev.room)


def create() -> Operator[ConsoleSettings]:
    """Build the console operator (nothing runs until ``run()`` or ``serve()``)."""
    return connector_operator(ConsolePlatform(), ConsoleSettings, name="console")


def main() -> None:
    """Run the console operator as a process."""
    create().run()


if __name__ == "__main__":
    main()
