"""Every error eeveepy raises, under one root.

EeveeError
 ├── ConfigError                 broken or missing configuration (carries file and key path)
 ├── LogQueryError               a log query or setup that cannot be done (bad --since, level)
 ├── SubjectError                a subject or token that is not part of the tree
 │    └── IrreversibleTokenError a long value's bounded token (prefix + digest): not decodable
 ├── EnvelopeError               a payload that is not a valid envelope (subject, reason)
 ├── PayloadTooLargeError        a payload over the server's max_payload, refused before sending
 ├── BusError                    talking to NATS failed (carries the subject, when known)
 │    ├── BusNotRunningError     no running system found (no state file, nothing answering)
 │    ├── BusDownError           the running system's bus does not answer (restarting?)
 │    ├── BusClosedError         the connection is closed (or draining): nothing can be sent
 │    ├── OutboundBufferFullError  the bus is away and the client's outgoing buffer is full
 │    ├── BadBusSubjectError     the client refused a subject (an empty one, say)
 │    ├── RequestTimeoutError    a request got no reply in time
 │    ├── NoRespondersError      nobody subscribes to a request's subject
 │    ├── RemoteError            the responder answered with an error
 │    ├── DeliveryError          a stored publish was not acknowledged by its stream in time
 │    ├── StreamMissingError     a JetStream stream is not there (or JetStream is not available)
 │    └── StoreError             an operator's key-value store could not be read
 ├── NatsServerError             the embedded nats-server could not be started or stopped
 ├── ForkServerError             the fork server could not be started or could not spawn
 ├── OperatorError               an operator's runtime could not start or was misused
 ├── SupervisorError             a supervisor request failed (unknown operator id, lease held)
 │    └── AlreadyRunningError    another supervisor holds the state directory (pid, since when)
 ├── ConnectorError              a chat connector's platform failed, or the kit was misused
 │    ├── SessionError           the session with the chat platform failed or ended (reconnect)
 │    ├── AuthenticationError    the platform refused the credentials (retried slowly)
 │    │    └── UntrustedServerError  the server's TLS certificate could not be verified
 │    ├── RefusedError           an outgoing message the platform will never send (dead-lettered)
 │    ├── IrcError               the IRC connector (operators/irc)
 │    │    ├── IrcTextError      a programming mistake in a call to the IRC text helpers
 │    │    ├── InvalidTargetError  an outgoing target that is not one channel or one nick
 │    │    │                     (also a RefusedError: dead-lettered)
 │    │    └── IrcConnectionError  the connection to the IRC server failed or ended
 │    │         │                (also a SessionError: the connector reconnects)
 │    │         └── SaslFailedError  SASL authentication failed (also an AuthenticationError)
 │    └── MatrixError            the Matrix connector (operators/matrix)
 │         ├── MatrixTargetError  an outgoing target that is not a room id, alias or user id
 │         │                     (also a RefusedError: dead-lettered)
 │         ├── MatrixSessionError  the homeserver failed or refused a request
 │         │    │                (also a SessionError: the connector reconnects)
 │         │    └── RateLimitedError  still HTTP 429 after the connector waited it out 10 times
 │         └── MatrixLoginError  the homeserver refused the credentials
 │                               (also an AuthenticationError: retried slowly)
 ├── CrpcError                   the ChatOps RPC operator (operators/crpc)
 │    ├── CrpcConfigError        a base URL or key that cannot work (also a ConfigError)
 │    ├── ListingError           a server's listing cannot be used (not JSON, wrong shape)
 │    │    └── RegexError        a method's Ruby regex has no Python translation
 │    ├── EndpointError          an endpoint URL, prefix or chat request that cannot work
 │    └── CallError              a call refused or failed (carries HTTP status, JSON-RPC code)
 │         └── SignatureError    a request's signature, nonce or timestamp is refused
 │                               (codes -32800 to -32804, HTTP 403)
 └── ScaffoldError               `eevee new operator` could not create the package
      ├── InvalidNameError       NAME cannot be a package, operator id and command name
      └── TargetExistsError      DIR/NAME already exists: nothing is overwritten
"""

from __future__ import annotations


class EeveeError(Exception):
    """Root of every error raised by eeveepy."""


class ConfigError(EeveeError):
    """Configuration is missing or invalid.

    ``problems`` holds one ``(location, message)`` pair per problem, where the location names
    the file and the key path, e.g. ``config/eevee.toml: operators.echo.restart``.
    """

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems: list[tuple[str, str]] = problems or []

    def __str__(self) -> str:
        if not self.problems:
            return super().__str__()
        lines = [super().__str__()]
        lines.extend(f"  {where}: {what}" for where, what in self.problems)
        return "\n".join(lines)


class LogQueryError(EeveeError):
    """A log query or logging setup that cannot be done: a bad ``--since``, an unknown level."""


class SubjectError(EeveeError):
    """A subject, token or operator id that does not fit the subject tree."""


class IrreversibleTokenError(SubjectError):
    """A token is the bounded form of a long value (a readable prefix and a digest).

    It stands for the value but cannot be turned back into it: take the value from the
    message body. ``readable`` is the decoded prefix, for display.
    """

    def __init__(self, message: str, readable: str) -> None:
        super().__init__(message)
        self.readable = readable


class EnvelopeError(EeveeError):
    """A payload that could not be decoded or validated as an envelope."""

    def __init__(self, reason: str, subject: str = "", payload: bytes = b"") -> None:
        super().__init__(f"{subject}: {reason}" if subject else reason)
        self.reason = reason
        self.subject = subject
        self.payload = payload


class PayloadTooLargeError(EeveeError):
    """An encoded envelope is larger than the server accepts; nothing was sent."""

    def __init__(self, subject: str, size: int, limit: int) -> None:
        super().__init__(
            f"payload for {subject} is {size} bytes, over the server's max_payload of {limit} "
            "bytes; split the message or raise max_payload in the bus configuration"
        )
        self.subject = subject
        self.size = size
        self.limit = limit


class BusError(EeveeError):
    """Talking to the NATS bus failed; ``subject`` is the subject concerned, when known."""

    def __init__(self, *args: object, subject: str = "") -> None:
        super().__init__(*args)
        self.subject = subject


class BusNotRunningError(BusError):
    """No running eeveepy system could be found."""


class BusDownError(BusError):
    """The running system's bus does not answer (an embedded one may be restarting)."""


class BusClosedError(BusError):
    """The bus connection is closed (or draining at shutdown): nothing more can be sent on it."""


class OutboundBufferFullError(BusError):
    """The bus is away and the client's buffer of messages to send when it is back is full."""


class BadBusSubjectError(BusError):
    """The bus client refused a subject."""


class RequestTimeoutError(BusError):
    """A request got no reply within its timeout."""


class NoRespondersError(BusError):
    """Nobody is subscribed to the subject a request was sent to."""


class RemoteError(BusError):
    """The responder answered a request with an error."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class DeliveryError(BusError):
    """A stored publish was not acknowledged by its stream within its deadline."""

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(f"{subject} was not stored: {reason}", subject=subject)
        self.reason = reason


class StreamMissingError(BusError):
    """A JetStream stream is not there, or JetStream is not available."""


class StoreError(BusError):
    """An operator's key-value store could not be read (writes are kept and retried)."""


class NatsServerError(EeveeError):
    """The embedded nats-server could not be started, or did not stop."""


class ForkServerError(EeveeError):
    """The fork server could not be started or could not spawn."""


class OperatorError(EeveeError):
    """An operator runtime could not start, or was used wrongly."""


class SupervisorError(EeveeError):
    """A request to the supervisor failed."""


class AlreadyRunningError(SupervisorError):
    """Another ``eevee up`` holds this state directory's lock; the message names it."""


class ConnectorError(EeveeError):
    """A chat connector's platform failed, or the connector kit was used wrongly."""


class SessionError(ConnectorError):
    """The session with the chat platform failed or ended; the connector reconnects."""


class AuthenticationError(ConnectorError):
    """The chat platform refused the credentials; the connector retries, slowly."""


class UntrustedServerError(AuthenticationError):
    """The chat server's TLS certificate could not be verified (wrong CA, wrong name...).

    Retried as slowly as refused credentials: it does not fix itself."""


class RefusedError(ConnectorError):
    """An outgoing message the platform will never send (an invalid target...).

    The connector dead-letters it with this error's text as the reason.
    """


class ScaffoldError(EeveeError):
    """``eevee new operator``: the package could not be created."""


class InvalidNameError(ScaffoldError):
    """NAME cannot be a package, operator id and command name."""


class TargetExistsError(ScaffoldError):
    """``DIR/NAME`` already exists: nothing is overwritten."""


class IrcError(ConnectorError):
    """The IRC connector (``operators/irc``) failed."""


class IrcTextError(IrcError):
    """A programming mistake in a call to the IRC text helpers (an impossible byte budget, a
    command that is not a command); never raised for odd input text."""


class InvalidTargetError(IrcError, RefusedError):
    """An outgoing message's target is not one channel or one nick of the server (``0``,
    ``#a,#b``, a space...); ``problem`` says why. Nothing was sent (the connector kit
    dead-letters the message with this error's text)."""

    def __init__(self, target: str, problem: str) -> None:
        super().__init__(f"invalid IRC target: {problem}")
        self.target = target
        self.problem = problem


class IrcConnectionError(IrcError, SessionError):
    """The connection to the IRC server failed or ended (the connector reconnects)."""


class SaslFailedError(IrcConnectionError, AuthenticationError):
    """SASL authentication failed; the connector kit reports it and retries only slowly."""


class MatrixError(ConnectorError):
    """The Matrix connector (``operators/matrix``) failed."""


class MatrixTargetError(MatrixError, RefusedError):
    """An outgoing message's target is not a room id (``!...``), a room alias (``#a:server``)
    or, for a private message, a user id (``@u:server``); nothing was sent."""


class MatrixSessionError(MatrixError, SessionError):
    """The homeserver failed a request or could not be reached; ``status`` is its error code
    (``M_UNKNOWN``...) or HTTP status, and ``http_status`` the HTTP status, when it answered."""

    def __init__(
        self, message: str, status: str | None = None, http_status: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.http_status = http_status


class RateLimitedError(MatrixSessionError):
    """The homeserver still answered 429 after the connector waited as it asked, ten times in a
    row (``retry_after``: the last wait it asked for, in seconds); the request is tried again
    later (a send) or the session starts again (a sync)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, "M_LIMIT_EXCEEDED")
        self.retry_after = retry_after


class MatrixLoginError(MatrixError, AuthenticationError):
    """The homeserver refused the password or the access token."""


class CrpcError(EeveeError):
    """The ChatOps RPC operator (``operators/crpc``) failed, as a client or as a server."""


class CrpcConfigError(CrpcError, ConfigError):
    """A base URL or a key that cannot work (a default port written out, a key that is not an
    RSA PEM...); the message says what to change and never contains key material."""


class CallError(CrpcError):
    """A ChatOps RPC call refused or failed: ``status`` is the HTTP status and ``code`` the
    JSON-RPC error code of the reply (-32601 method not found, -32602 bad params or a
    command's own failure...); the message is the reply's ``error.message``."""

    def __init__(self, message: str, code: int, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class SignatureError(CallError):
    """A request's ``Chatops-*`` headers are refused (HTTP 403): ``code`` is -32800 not
    authorized, -32801 nonce missing, -32802 bad signature header, -32803 timestamp out of
    the window or -32804 bad timestamp."""

    def __init__(self, message: str, code: int = -32800) -> None:
        super().__init__(message, code, 403)


class ListingError(CrpcError):
    """A ChatOps RPC server's listing cannot be used: not JSON, or not the listing's shape."""


class RegexError(ListingError):
    """A listed method's Ruby regex cannot be translated to a Python one (or does not
    compile); the method is left out, the other methods are registered."""


class EndpointError(CrpcError):
    """An endpoint the ChatOps RPC client is asked to use cannot work: a URL that is not
    http(s), plain HTTP to a non-loopback host without ``allow_plaintext``, a prefix that is
    not a command name or is taken; the message says what to do instead."""
