"""Console: the resident half of the connector of the ``console`` platform.

The console's users are ``eevee chat`` sessions (see :mod:`eeveepy.cli.chat` and "Console
connector" in docs/protocol.md). Each session publishes its user's lines itself, on
``{p}.chat.in.console.<network>.<room>``, and reads the bot's messages on
``{p}.chat.out.console.<network>``; nothing they say passes through this operator, so
``eevee chat`` works without it. This operator is what makes the console a connector like
the others:

- it announces the network: a ``connected`` chat.event (user: the bot) on
  ``{p}.chat.event.console.<network>.connected`` when it starts, and ``disconnected`` /
  ``connected`` when a reload changes the network;
- it receives ``{p}.chat.out.console.<network>`` like any connector (fast path and the chat
  output stream, :class:`~eeveepy.outbox.Outbox`), so a malformed outgoing message is
  dead-lettered with the reason (``eevee sub 'dlq.>'``), what the bot says is logged at debug
  level and the stream does not keep the console's messages;
- it logs sessions joining and leaving the rooms (their ``join`` and ``part`` events);
- it has a place in ``eevee ps``.

Settings (:class:`eeveepy.chat.ConsoleSettings`, read by ``eevee chat`` too): ``network``
(default ``"local"``) and ``bot_name`` (default ``"eevee"``). Run it under ``eevee up``
(``module = "operators.console"``) or alone for development::

    python -m operators.console --id console --nats-url nats://127.0.0.1:4222
"""

from __future__ import annotations

from eeveepy import Operator
from eeveepy.bus.ipc import Subscription
from eeveepy.connector.outbox import Outbox
from eeveepy.console import PLATFORM, ConsoleSettings
from eeveepy.protocol.models import ChatEvent, ChatEventType, ChatUser, Envelope, OutgoingMessage
from eeveepy.protocol.subjects import encode_token


class Console:
    """The connector's state and handlers, bound to its :class:`Operator`."""

    def __init__(self, op: Operator[ConsoleSettings]) -> None:
        self.op = op
        self.network: str | None = None
        self._subs: list[Subscription] = []
        self.outbox = Outbox(op, self.on_out)

    async def start(self) -> None:
        await self._connect(self.op.settings.network)

    async def reload(self) -> None:
        network = self.op.settings.network
        old = self.network
        if network == old:
            return
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs = []
        if old is not None:
            await self._announce(old, ChatEventType.DISCONNECTED)
        await self._connect(network)

    async def _connect(self, network: str) -> None:
        ipc, subjects = self.op.ipc, self.op.subjects
        events = subjects.pattern(f"chat.event.{PLATFORM}.{encode_token(network)}.*")
        await self.outbox.open(PLATFORM, network)
        self._subs = [await ipc.subscribe(events, self.on_event)]
        self.network = network
        await self._announce(network, ChatEventType.CONNECTED)
        self.op.log.info("console connected", network=network)

    async def _announce(self, network: str, event: ChatEventType) -> None:
        name = self.op.settings.bot_name
        body = ChatEvent(
            platform=PLATFORM, network=network, event=event, user=ChatUser(id=name, name=name)
        )
        await self.op.ipc.publish(self.op.subjects.chat_event(PLATFORM, network, event.value), body)

    def on_out(self, env: Envelope[OutgoingMessage]) -> None:
        out = env.body
        self.op.log.debug(
            "bot says", target=out.target, private=out.private, text=out.text, trace=env.trace
        )

    async def on_event(self, ev: ChatEvent) -> None:
        if ev.user is None or ev.event not in (ChatEventType.JOIN, ChatEventType.PART):
            return
        what = "session joined" if ev.event is ChatEventType.JOIN else "session left"
        self.op.log.info(what, user=ev.user.name, user_id=ev.user.id, room=ev.room)


def create() -> Operator[ConsoleSettings]:
    """Build the console operator (nothing runs until ``run()`` or ``serve()``)."""
    op = Operator(ConsoleSettings, name="console")
    console = Console(op)
    op.on_start(console.start)
    op.on_reload(console.reload)
    return op


def main() -> None:
    """Run the console operator as a process."""
    create().run()


if __name__ == "__main__":
    main()
