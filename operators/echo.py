"""Echo: answers ``!echo TEXT`` with ``TEXT``. The smallest useful command operator.

The router recognises the command (``!echo hi``, ``eevee: echo hi``, ``echo hi`` in private)
and runs it here; see "Commands" in docs/protocol.md. Run it under ``eevee up``
(``module = "operators.echo"``, next to ``operators.router``) or alone for development::

    python -m operators.echo --id echo --nats-url nats://127.0.0.1:4222

Several echo operators (different ids) may run at once: they share the invocations.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from eeveepy import CommandInvocation, Operator


class EchoSettings(BaseModel):
    """Settings of the echo operator: none yet."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def create() -> Operator[EchoSettings]:
    """Build the echo operator (nothing runs until ``run()`` or ``serve()``)."""
    op = Operator(EchoSettings, name="echo")

    @op.command("echo", usage="!echo TEXT", help="Repeat TEXT.", pattern=r"(?s)(?P<text>.+)")
    async def echo(inv: CommandInvocation) -> str | None:
        return inv.args["text"]

    return op


def main() -> None:
    """Run the echo operator as a process."""
    create().run()


if __name__ == "__main__":
    main()
