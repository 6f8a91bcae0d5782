"""Typed envelopes and message bodies: the wire protocol of the bus.

Every message on the bus is one JSON object, an :class:`Envelope`::

    {"v": 1, "kind": "chat.message", "id": "01JD...", "source": "irc.libera",
     "timestamp": "2026-11-22T03:04:05.123456Z", "headers": {"trace": "..."},
     "body": {...}}

``kind`` names the body's model (``ChatMessage.KIND == "chat.message"``). Unknown fields are
ignored, so a newer producer can add fields without breaking older consumers; a missing or
mistyped required field makes the whole envelope invalid. The JSON Schemas in ``schemas/`` are
generated from these models (``eevee schema``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from eeveepy.protocol.status import Health as Health
from eeveepy.protocol.status import OperatorStatus as OperatorStatus

PROTOCOL_VERSION = 1

_MODEL_CONFIG = ConfigDict(frozen=True, extra="ignore", ser_json_timedelta="float")


class Body(BaseModel):
    """Base class of every envelope body; ``KIND`` names it on the wire."""

    model_config = _MODEL_CONFIG
    KIND: ClassVar[str] = ""


BodyT = TypeVar("BodyT")


class Envelope(BaseModel, Generic[BodyT]):
    """The one message shape on the bus: metadata around a typed body."""

    model_config = _MODEL_CONFIG

    v: Literal[1] = Field(default=1, description="Protocol version; always 1 for now.")
    kind: str = Field(description="The body's kind, e.g. 'chat.message'.", min_length=1)
    id: str = Field(description="Unique message id (ULID-like, sortable by time).", min_length=1)
    source: str = Field(description="Operator id of the publisher, enforced by the broker.")
    timestamp: AwareDatetime = Field(
        description="When it was published: RFC 3339 with a UTC offset (publishers write Z)."
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Free-form string metadata: 'trace' (trace id), 'reply_to' (message id)...",
    )
    body: BodyT

    @property
    def trace(self) -> str:
        """The trace id: the header if set, else this message's own id."""
        return self.headers.get("trace") or self.id


# ---------------------------------------------------------------------------------------------
# Chat


class ChatUser(BaseModel):
    """Who said something, as the chat platform identifies them."""

    model_config = _MODEL_CONFIG

    id: str = Field(description="Stable platform id: IRC nick, XMPP bare JID, Matrix user id.")
    name: str = Field(description="Display name or nick.")
    account: str | None = Field(
        default=None, description="Authenticated account (IRC services account, XMPP JID...)."
    )
    host: str | None = Field(default=None, description="IRC user@host, where known.")


class MessageStyle(StrEnum):
    """How a chat line is presented."""

    MESSAGE = "message"
    ACTION = "action"
    NOTICE = "notice"


class ChatMessage(Body):
    """A chat message received by a connector."""

    KIND: ClassVar[str] = "chat.message"

    platform: str = Field(description="irc, xmpp, matrix, console...")
    network: str = Field(description="The connector's network or account name.")
    room: str = Field(description="Channel / room id; for private messages, the sender's id.")
    user: ChatUser
    text: str = Field(description="Plain text, formatting removed.")
    raw: str | None = Field(default=None, description="Text as received, formatting kept.")
    style: MessageStyle = MessageStyle.MESSAGE
    private: bool = Field(default=False, description="Sent to the bot alone, not to a room.")
    mentioned: bool = Field(default=False, description="The text mentions the bot by name.")
    message_id: str | None = Field(default=None, description="Platform message id, if any.")
    reply_to: str | None = Field(
        default=None, description="Platform id of the message this one answers, if it says."
    )
    thread: str | None = Field(
        default=None, description="Platform id of the thread it is in (Matrix: the root event)."
    )


class ChatEventType(StrEnum):
    """Things that happen in chat besides messages."""

    JOIN = "join"
    PART = "part"
    QUIT = "quit"
    KICK = "kick"
    TOPIC = "topic"
    NICK = "nick"
    INVITE = "invite"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class ChatEvent(Body):
    """A join, part, topic change, connection change... seen by a connector."""

    KIND: ClassVar[str] = "chat.event"

    platform: str
    network: str
    event: ChatEventType
    room: str | None = None
    user: ChatUser | None = Field(default=None, description="Who did it.")
    target: ChatUser | None = Field(default=None, description="Who it was done to (kick).")
    text: str | None = Field(default=None, description="Reason, topic or new nick.")


class OutgoingMessage(Body):
    """Ask a connector to send a message to a room or a user."""

    KIND: ClassVar[str] = "chat.out"

    platform: str
    network: str
    target: str = Field(description="Room id, or user id when private is true.")
    text: str = Field(description="Text; newlines become separate lines where the platform needs.")
    style: MessageStyle = MessageStyle.MESSAGE
    private: bool = False
    reply_to: str | None = Field(default=None, description="Platform message id answered.")


# ---------------------------------------------------------------------------------------------
# Commands


class RateLimit(BaseModel):
    """At most ``count`` invocations per ``period`` seconds."""

    model_config = _MODEL_CONFIG

    count: int = Field(ge=1)
    """Invocations allowed in one period."""
    period: float = Field(gt=0)
    """The period, in seconds."""


class CommandScope(BaseModel):
    """Where a command is offered; empty lists mean everywhere."""

    model_config = _MODEL_CONFIG

    platforms: list[str] = Field(default_factory=list)
    networks: list[str] = Field(default_factory=list)
    rooms: list[str] = Field(default_factory=list)


class CommandRegistration(Body):
    """An operator offers a command; the router dispatches it on ``command.run.<name>``."""

    KIND: ClassVar[str] = "command.register"

    operator: str = Field(description="Operator id serving the command.")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    aliases: list[str] = Field(default_factory=list)
    pattern: str | None = Field(
        default=None, description="Regex with named groups matched against the arguments."
    )
    usage: str = ""
    help: str = ""
    permission: str | None = Field(default=None, description="Permission (group) required.")
    rate_limit: RateLimit | None = None
    scope: CommandScope = Field(default_factory=CommandScope)


class CommandUnregistration(Body):
    """An operator stops offering a command it registered (on its own
    ``command.register.<id>``); the router forgets that registration."""

    KIND: ClassVar[str] = "command.unregister"

    operator: str = Field(description="Operator id that registered the command.")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")


class CommandInvocation(Body):
    """The router asks a command operator to run a command."""

    KIND: ClassVar[str] = "command.run"

    command: str
    args: dict[str, str] = Field(default_factory=dict, description="Named arguments.")
    text: str = Field(default="", description="Everything after the command name.")
    message: ChatMessage = Field(description="The chat message that invoked the command.")


class CommandResult(Body):
    """A command operator's answer to a :class:`CommandInvocation` request."""

    KIND: ClassVar[str] = "command.result"

    ok: bool = Field(description="The command ran (its own reply, if any, was sent).")
    message: str = Field(default="", description="Why it failed, when ok is false.")


class CommandSync(Body):
    """The router asks every command operator to publish its registrations again."""

    KIND: ClassVar[str] = "command.sync"

    router: str = Field(default="", description="Operator id of the router asking.")


class CommandRejected(Body):
    """The router refused a registration, on ``command.rejected.<operator-id>``."""

    KIND: ClassVar[str] = "command.rejected"

    name: str = Field(description="The command name as registered (may be invalid).")
    operator: str = Field(description="Operator id the registration named.")
    reason: str = Field(description="Why it was refused.")


# ---------------------------------------------------------------------------------------------
# Logs


class LogLevel(StrEnum):
    """Log levels, lowest first."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class LogRecord(Body):
    """One structured log event of an operator or the supervisor."""

    KIND: ClassVar[str] = "log"

    operator: str = Field(description="The operator (or 'supervisor') the event is about.")
    level: LogLevel
    event: str = Field(description="What happened (the log message).")
    time: AwareDatetime | None = Field(
        default=None, description="When it was logged, if not the envelope's timestamp."
    )
    stream: Literal["stdout", "stderr"] | None = Field(
        default=None, description="Set when the line was captured from the process's output."
    )
    fields: dict[str, Any] = Field(default_factory=dict, description="Bound context.")


# ---------------------------------------------------------------------------------------------
# Lifecycle


class ControlAction(StrEnum):
    """What the supervisor (or an operator's ``ctl`` subject) can be asked to do."""

    HALT = "halt"
    RESUME = "resume"
    RELOAD = "reload"
    RESTART = "restart"
    STOP = "stop"
    START = "start"
    SHUTDOWN = "shutdown"


class Control(Body):
    """A lifecycle command for an operator, or for the supervisor about an operator."""

    KIND: ClassVar[str] = "control"

    action: ControlAction
    target: str = Field(default="", description="Operator id, 'all', or empty for the receiver.")


class ConfigProblem(BaseModel):
    """One problem of a configuration: where (file and key path) and what."""

    model_config = _MODEL_CONFIG

    where: str
    what: str


class ControlResult(Body):
    """The answer to a :class:`Control` request."""

    KIND: ClassVar[str] = "control.result"

    ok: bool
    message: str = ""
    operators: list[OperatorStatus] = Field(default_factory=list)
    plan: dict[str, list[str]] = Field(
        default_factory=dict,
        description="A configuration reload: the operator ids by what it did to them (added,"
        " removed, restarted, reloaded, stopped, unchanged).",
    )
    problems: list[ConfigProblem] = Field(
        default_factory=list,
        description="A configuration reload refused: every problem of the new configuration.",
    )


class Ping(Body):
    """A liveness probe, sent as a request on ``operator.ping.<id>``."""

    KIND: ClassVar[str] = "ping"


MAX_PROBLEM_LENGTH = 500
"""Longest ``problem`` text in a :class:`Pong` (longer ones are cut)."""


class Pong(Body):
    """The answer to a :class:`Ping`."""

    KIND: ClassVar[str] = "pong"

    operator: str
    state: str = Field(description="running or halted")
    health: Health | None = Field(
        default=None,
        description="ok, or degraded when the operator runs but cannot do all of its job "
        "(writes failing and being retried...); absent: not reported.",
    )
    problem: str = Field(
        default="",
        max_length=MAX_PROBLEM_LENGTH,
        description="What is wrong, when degraded.",
    )


class Ready(Body):
    """An operator announces it is ready, on ``operator.ready.<id>``."""

    KIND: ClassVar[str] = "ready"

    operator: str
    pid: int


class SupervisorStatus(Body):
    """The supervisor's answer on ``supervisor.status``."""

    KIND: ClassVar[str] = "supervisor.status"

    supervisor: str
    pid: int
    started: AwareDatetime
    operators: list[OperatorStatus] = Field(default_factory=list)
    warnings: list[str] = Field(
        default_factory=list,
        description="What is wrong with the bus right now, e.g. JetStream disabled by the"
        " embedded nats-server (eevee ps prints each).",
    )


# ---------------------------------------------------------------------------------------------
# Errors and dead letters


class DeadLetter(Body):
    """A payload that failed validation, republished on ``dlq.<original subject>``."""

    KIND: ClassVar[str] = "dlq"

    subject: str = Field(description="Where the bad payload was received.")
    reason: str = Field(description="What was wrong with it.")
    receiver: str = Field(description="Operator id that rejected it.")
    size: int = Field(description="Size of the original payload in bytes.")
    payload: str = Field(description="The payload (as text, or base64 if not UTF-8).")
    encoding: Literal["utf-8", "base64"] = "utf-8"
    truncated: bool = Field(default=False, description="Payload cut to fit the DLQ message.")


class ErrorReply(Body):
    """A request could not be served."""

    KIND: ClassVar[str] = "error"

    error: str
    message: str


# ---------------------------------------------------------------------------------------------
# Connector control


class ConnectorControl(Body):
    """Ask a chat connector to join, part, change nick or list a room's users.

    A request on ``{p}.chat.ctl.<platform>.<network>``, answered with a
    :class:`ConnectorControlResult`.
    """

    KIND: ClassVar[str] = "chat.ctl"

    action: Literal["join", "part", "nick", "names"]
    room: str | None = Field(default=None, description="Room to join, part or list (names).")
    key: str | None = Field(default=None, description="Room key (password) for join.")
    nick: str | None = Field(default=None, description="The new nick (nick).")
    reason: str | None = Field(default=None, description="Part message.")


class ConnectorControlResult(Body):
    """The answer to a :class:`ConnectorControl` request."""

    KIND: ClassVar[str] = "chat.ctl.result"

    ok: bool
    message: str = Field(default="", description="What happened, or why it failed.")
    users: list[str] = Field(default_factory=list, description="Nicks in the room (names).")


ControlResult.model_rebuild()

BODY_MODELS: tuple[type[Body], ...] = (
    ChatMessage,
    ChatEvent,
    OutgoingMessage,
    CommandRegistration,
    CommandUnregistration,
    CommandInvocation,
    CommandResult,
    CommandSync,
    CommandRejected,
    LogRecord,
    Control,
    ControlResult,
    Ping,
    Pong,
    Ready,
    SupervisorStatus,
    DeadLetter,
    ErrorReply,
    ConnectorControl,
    ConnectorControlResult,
)
"""Every body kind of the protocol, in documentation order."""


def body_model(kind: str) -> type[Body] | None:
    """The body model for ``kind``, or None when the kind is not part of the protocol."""
    for model in BODY_MODELS:
        if model.KIND == kind:
            return model
    return None


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
