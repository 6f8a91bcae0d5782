"""eeveepy: a chat-ops bot platform of operator processes talking over NATS.

The public surface for operator authors is re-exported here: the envelope and body models,
the subject builder, the errors, and (once the runtime is imported) :class:`Operator`.
"""

from __future__ import annotations

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
