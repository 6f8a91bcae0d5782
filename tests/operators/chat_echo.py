"""A router-less echo for runtime tests: answers chat lines starting with a prefix directly.

Settings: ``prefix`` (default ``"!echo "``). Run as ``python -m tests.operators.chat_echo``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from eeveepy import ChatMessage, Operator


class EchoSettings(BaseModel):
    """Settings of the echo operator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefix: str = "!echo "
    """The text that starts a message to echo."""


def create() -> Operator[EchoSettings]:
    """Build the echo operator (nothing runs until ``run()`` or ``serve()``)."""
    op = Operator(EchoSettings, name="echo")

    @op.ipc.subscribe("chat.in.>")
    async def on_chat(msg: ChatMessage) -> None:
        prefix = op.settings.prefix
        if msg.text.startswith(prefix) and msg.text[len(prefix) :].strip():
            await op.reply(msg, msg.text[len(prefix) :])

    return op


def main() -> None:
    """Run the echo operator as a process."""
    create().run()


if __name__ == "__main__":
    main()
