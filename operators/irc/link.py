"""The IRC connector's way to the bus: chat messages, chat events and refused messages.

A failed publish is logged and never ends the connection: a chat message is stored in the
chat input stream before the next server line is read, so once the stream has it, it is
answered even if the router, a command operator or the bus dies afterwards. The connector
kit's link takes this module's place when the IRC connector moves onto the kit.
"""

from __future__ import annotations

from typing import Any

from eeveepy import Operator
from eeveepy.errors import EeveeError, InvalidTargetError
from eeveepy.protocol.codec import dead_letter, dump_model
from eeveepy.protocol.models import ChatEvent, ChatMessage, Envelope, OutgoingMessage
from operators.irc.translate import PLATFORM

__all__ = ["BusLink"]


class BusLink:
    """Publishes for the connector operator ``op`` on the network ``network``."""

    def __init__(self, op: Operator[Any]) -> None:
        self._op = op
        self.network = ""

    async def message(self, msg: ChatMessage) -> None:
        """Publish a received message on ``chat.in``, stored (acknowledged by its stream)."""
        op = self._op
        try:
            await op.ipc.publish_stored(op.subjects.chat_in(PLATFORM, self.network, msg.room), msg)
        except EeveeError as exc:
            op.log.warning("cannot publish chat message", room=msg.room, error=str(exc))

    async def event(self, event: ChatEvent) -> None:
        """Publish a chat event on ``chat.event``."""
        op = self._op
        subject = op.subjects.chat_event(PLATFORM, self.network, event.event.value)
        try:
            await op.ipc.publish(subject, event)
        except EeveeError as exc:
            op.log.warning(
                "cannot publish chat event", chat_event=event.event.value, error=str(exc)
            )

    async def refuse(self, env: Envelope[OutgoingMessage], error: InvalidTargetError) -> None:
        """Log a ``chat.out`` that must not be sent and dead-letter it for its sender to see."""
        op = self._op
        subject = op.subjects.chat_out(PLATFORM, self.network)
        op.log.warning(
            "irc: refusing to send to an invalid target", target=error.target, reason=error.problem
        )
        try:
            letter = dead_letter(subject, str(error), op.id, dump_model(env))
            await op.ipc.publish(op.subjects.dlq(subject), letter)
        except EeveeError as exc:
            op.log.error("could not publish dead letter", subject=subject, error=str(exc))
