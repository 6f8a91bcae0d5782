"""eeveepy: a chat-ops bot platform of operator processes talking over NATS.

The public surface for operator authors is re-exported here: the envelope and body models,
the subject builder, the errors, and :class:`Operator`. The runtime (and with it the NATS
client) is imported on first use of ``Operator``: the ``eevee`` command imports this package
too, and must not pay for a client it may never start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eeveepy.errors import (
    BusError,
    ConfigError,
    EeveeError,
    EnvelopeError,
    OperatorError,
    PayloadTooLargeError,
    SubjectError,
    SupervisorError,
)
from eeveepy.protocol.models import (
    ChatEvent,
    ChatMessage,
    ChatUser,
    CommandInvocation,
    CommandRegistration,
    Control,
    DeadLetter,
    Envelope,
    LogRecord,
    OutgoingMessage,
)
from eeveepy.protocol.subjects import Subjects

if TYPE_CHECKING:
    from eeveepy.runtime.operator import Operator

__version__ = "0.1.0"

__all__ = [
    "BusError",
    "ChatEvent",
    "ChatMessage",
    "ChatUser",
    "CommandInvocation",
    "CommandRegistration",
    "ConfigError",
    "Control",
    "DeadLetter",
    "EeveeError",
    "Envelope",
    "EnvelopeError",
    "LogRecord",
    "Operator",
    "OperatorError",
    "OutgoingMessage",
    "PayloadTooLargeError",
    "SubjectError",
    "Subjects",
    "SupervisorError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """``eeveepy.Operator``, imported when first asked for (PEP 562)."""
    if name == "Operator":
        from eeveepy.runtime.operator import Operator

        return Operator
    raise AttributeError(f"module 'eeveepy' has no attribute {name!r}")
