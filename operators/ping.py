"""Ping: answers ``!ping`` with ``pong``, to check that the bot is alive end to end.

Run it under ``eevee up`` (``module = "operators.ping"``, next to ``operators.router``) or
alone for development::

    python -m operators.ping --id ping --nats-url nats://127.0.0.1:4222
"""

from __future__ import annotations

from eeveepy import CommandInvocation, Operator
from eeveepy.runtime.settings import AnySettings


def create() -> Operator[AnySettings]:
    """Build the ping operator (nothing runs until ``run()`` or ``serve()``)."""
    op = Operator(name="ping")

    @op.command("ping", usage="!ping", help="Answer pong.")
    def ping(inv: CommandInvocation) -> str:
        return "pong"

    return op


def main() -> None:
    """Run the ping operator as a process."""
    create().run()


if __name__ == "__main__":
    main()
