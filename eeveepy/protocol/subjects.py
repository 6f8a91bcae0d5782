"""The one place that builds and parses every NATS subject of the bus.

The subject tree, under a configurable prefix ``{p}`` (default ``eevee``)::

    {p}.chat.in.{platform}.{network}.{room}       a chat message received in a room
    {p}.chat.event.{platform}.{network}.{event}   a non-message chat event (join, part, ...)
    {p}.chat.out.{platform}.{network}             something to send to a network
    {p}.command.register[.{operator_id}]          a command announces itself
    {p}.command.run.{command}                     run a command
    {p}.log.{level}.{operator_id}                 an operator's log records
    {p}.operator.{ready|ping|ctl}.{operator_id}   operator lifecycle and control
    {p}.supervisor.{status|ctl}                   supervisor status and control
    {p}.dlq.{original without the prefix}         dead letters of any subject under the prefix

Kinds of token:

* **Encoded tokens** (``network``, ``room``, ``command``) carry chat-derived strings such as
  IRC ``#foo.bar``, Matrix ``!abc:server`` or XMPP ``room@conference.host``. They go through
  :func:`encode_token` (from :mod:`eeveepy.tokens`, which says how): never empty, never
  ``.``, ``*``, ``>``, whitespace or non-ASCII, so they can never split a subject or act as a
  wildcard, and at most :data:`MAX_TOKEN_LENGTH` (255) characters, so a subject never grows
  with chat input (a longer string gets a bounded form, which is not reversible).
  :func:`decode_token` accepts exactly what :func:`encode_token` produces.
* **Simple tokens** (``platform``, ``event``, ``level``) match ``[a-z0-9][a-z0-9_-]*``.
* **Operator ids** are one or more dot-separated parts, each ``[a-z0-9][a-z0-9_-]*``, at most
  64 characters in total (``echo``, ``irc.libera``, ``matrix.main-bot``).

  **Rule: an operator id is always the LAST part of any subject that carries it**, where it may
  span several tokens. So ``eevee.operator.ctl.>`` means every operator's ctl subject and
  ``eevee.operator.ctl.irc.>`` every instance of ``irc`` (``irc.libera``, ``irc.oftc``, ...),
  while ``eevee.operator.ctl.irc`` is the operator ``irc`` itself.
* **The prefix** is one or more dot-separated tokens of ``[A-Za-z0-9_-]+``.

Build subjects with :class:`Subjects` and take them apart with :meth:`Subjects.parse`;
``parse(build(...))`` gives back the builder's inputs for every builder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, get_args

from eeveepy.errors import IrreversibleTokenError, SubjectError
from eeveepy.protocol.tokens import (
    MAX_TOKEN_LENGTH,
    SAFE_CHARS,
    decode_token,
    encode_token,
    kv_token,
)

__all__ = [
    "DEFAULT_PREFIX",
    "KINDS",
    "MAX_OPERATOR_ID_LENGTH",
    "MAX_TOKEN_LENGTH",
    "OPERATOR_VERBS",
    "SAFE_CHARS",
    "SUPERVISOR_VERBS",
    "ParsedSubject",
    "SubjectKind",
    "Subjects",
    "decode_token",
    "encode_token",
    "kv_token",
    "validate_operator_id",
    "validate_prefix",
    "validate_token",
]

DEFAULT_PREFIX: Final = "eevee"
"""The prefix used when none is configured."""

MAX_OPERATOR_ID_LENGTH: Final = 64
"""Longest operator id accepted, dots included."""

OPERATOR_VERBS: Final = frozenset({"ready", "ping", "ctl"})
"""Verbs of ``{p}.operator.{verb}.{operator_id}``."""

SUPERVISOR_VERBS: Final = frozenset({"status", "ctl"})
"""Verbs of ``{p}.supervisor.{verb}``."""

SubjectKind = Literal[
    "chat.in",
    "chat.event",
    "chat.out",
    "chat.ctl",
    "command.register",
    "command.run",
    "command.sync",
    "command.rejected",
    "log",
    "operator.ready",
    "operator.ping",
    "operator.ctl",
    "supervisor.status",
    "supervisor.ctl",
    "dlq",
]
"""What a parsed subject is; see :attr:`ParsedSubject.kind`."""

KINDS: Final[frozenset[str]] = frozenset(get_args(SubjectKind))
"""Every value :attr:`ParsedSubject.kind` can take."""

_SIMPLE_RE: Final = re.compile("[a-z0-9][a-z0-9_-]*")
_OPERATOR_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]*(?:\.[a-z0-9][a-z0-9_-]*)*")
_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_WHITESPACE_RE: Final = re.compile(r"\s")


def validate_token(token: str, what: str = "token") -> str:
    """Return ``token`` if it is a simple token (``[a-z0-9][a-z0-9_-]*``), else raise.

    Simple tokens are platform names, event names and log levels; ``what`` names the value in
    the error message.
    """
    if _SIMPLE_RE.fullmatch(token) is None:
        raise SubjectError(
            f"invalid {what} {token!r}: must be lowercase letters, digits, '_' and '-', "
            "starting with a letter or digit"
        )
    return token


def validate_operator_id(op_id: str) -> str:
    """Return ``op_id`` if it is a valid operator id, else raise :class:`SubjectError`.

    An operator id is one or more dot-separated parts, each ``[a-z0-9][a-z0-9_-]*``, at most
    :data:`MAX_OPERATOR_ID_LENGTH` characters in total, e.g. ``echo`` or ``irc.libera``.
    """
    if len(op_id) > MAX_OPERATOR_ID_LENGTH:
        raise SubjectError(
            f"invalid operator id {op_id!r}: {len(op_id)} characters, over the limit of "
            f"{MAX_OPERATOR_ID_LENGTH}"
        )
    if _OPERATOR_ID_RE.fullmatch(op_id) is None:
        raise SubjectError(
            f"invalid operator id {op_id!r}: must be dot-separated parts of lowercase "
            "letters, digits, '_' and '-', each starting with a letter or digit"
        )
    return op_id


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a valid subject prefix, else raise :class:`SubjectError`.

    A prefix is one or more dot-separated tokens of ``[A-Za-z0-9_-]+``, e.g. ``eevee`` or
    ``acme.bot``.
    """
    if _PREFIX_RE.fullmatch(prefix) is None:
        raise SubjectError(
            f"invalid subject prefix {prefix!r}: must be dot-separated tokens of ASCII "
            "letters, digits, '_' and '-'"
        )
    return prefix


def _check_verb(verb: str, allowed: frozenset[str], what: str) -> str:
    if verb not in allowed:
        raise SubjectError(f"invalid {what} verb {verb!r}: must be one of {sorted(allowed)}")
    return verb


def _check_concrete(subject: str) -> None:
    """Raise unless ``subject`` is a subject NATS would publish to: no wildcards, no gaps."""
    if _WHITESPACE_RE.search(subject):
        raise SubjectError(f"invalid subject {subject!r}: contains whitespace")
    for token in subject.split("."):
        if not token:
            raise SubjectError(f"invalid subject {subject!r}: empty token")
        if token in ("*", ">"):
            raise SubjectError(f"invalid subject {subject!r}: wildcards are not subjects")


@dataclass(frozen=True, slots=True)
class ParsedSubject:
    """A subject of the tree, taken apart by :meth:`Subjects.parse`.

    ``kind`` says which branch of the tree it is; the other fields hold the decoded values
    that branch carries and are ``None`` otherwise. For ``dlq``, ``original`` is the full
    original subject (prefix included).
    """

    kind: SubjectKind
    platform: str | None = None
    network: str | None = None
    room: str | None = None
    event: str | None = None
    command: str | None = None
    level: str | None = None
    operator_id: str | None = None
    original: str | None = None


@dataclass(frozen=True, slots=True)
class Subjects:
    """Builds and parses the subjects of the bus under ``prefix``.

    >>> Subjects().chat_in("irc", "libera", "#foo.bar")
    'eevee.chat.in.irc.libera.#foo%2Ebar'
    """

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)

    # -- builders ---------------------------------------------------------------------------

    def chat_in(self, platform: str, network: str, room: str) -> str:
        """``{p}.chat.in.{platform}.{network}.{room}``: a message received in ``room``."""
        validate_token(platform, "platform")
        return f"{self.prefix}.chat.in.{platform}.{encode_token(network)}.{encode_token(room)}"

    def chat_event(self, platform: str, network: str, event: str) -> str:
        """``{p}.chat.event.{platform}.{network}.{event}``: a non-message chat event."""
        validate_token(platform, "platform")
        validate_token(event, "event")
        return f"{self.prefix}.chat.event.{platform}.{encode_token(network)}.{event}"

    def chat_out(self, platform: str, network: str) -> str:
        """``{p}.chat.out.{platform}.{network}``: something to send on ``network``."""
        validate_token(platform, "platform")
        return f"{self.prefix}.chat.out.{platform}.{encode_token(network)}"

    def chat_ctl(self, platform: str, network: str) -> str:
        """``{p}.chat.ctl.{platform}.{network}``: control requests for a connector."""
        validate_token(platform, "platform")
        return f"{self.prefix}.chat.ctl.{platform}.{encode_token(network)}"

    def command_sync(self) -> str:
        """``{p}.command.sync``: the router asks command operators to register again."""
        return f"{self.prefix}.command.sync"

    def command_rejected(self, operator_id: str) -> str:
        """``{p}.command.rejected.{operator_id}``: a refused registration (operator id last)."""
        return f"{self.prefix}.command.rejected.{validate_operator_id(operator_id)}"

    def command_register(self, operator_id: str | None = None) -> str:
        """``{p}.command.register.{operator_id}``: an operator announces its commands here.

        Without ``operator_id``, ``{p}.command.register``: the subject the router also reads
        from publishers that may register for any operator (tools, tests; with bus
        permissions no operator may publish there).
        """
        if operator_id is None:
            return f"{self.prefix}.command.register"
        return f"{self.prefix}.command.register.{validate_operator_id(operator_id)}"

    def command_run(self, name: str) -> str:
        """``{p}.command.run.{name}``: run the command ``name`` (any string, encoded)."""
        return f"{self.prefix}.command.run.{encode_token(name)}"

    def log(self, operator_id: str, level: str) -> str:
        """``{p}.log.{level}.{operator_id}``: log records of ``operator_id`` at ``level``."""
        validate_operator_id(operator_id)
        validate_token(level, "log level")
        return f"{self.prefix}.log.{level}.{operator_id}"

    def operator(self, verb: str, operator_id: str) -> str:
        """``{p}.operator.{verb}.{operator_id}`` with ``verb`` one of ready, ping, ctl."""
        _check_verb(verb, OPERATOR_VERBS, "operator")
        validate_operator_id(operator_id)
        return f"{self.prefix}.operator.{verb}.{operator_id}"

    def operator_ready(self, operator_id: str) -> str:
        """``{p}.operator.ready.{operator_id}``."""
        return self.operator("ready", operator_id)

    def operator_ping(self, operator_id: str) -> str:
        """``{p}.operator.ping.{operator_id}``."""
        return self.operator("ping", operator_id)

    def operator_ctl(self, operator_id: str) -> str:
        """``{p}.operator.ctl.{operator_id}``."""
        return self.operator("ctl", operator_id)

    def supervisor(self, verb: str) -> str:
        """``{p}.supervisor.{verb}`` with ``verb`` one of status, ctl."""
        _check_verb(verb, SUPERVISOR_VERBS, "supervisor")
        return f"{self.prefix}.supervisor.{verb}"

    def dlq(self, original: str) -> str:
        """``{p}.dlq.{original without the prefix}``: where dead letters of ``original`` go.

        ``original`` may be any concrete subject under the prefix (not only the branches
        :meth:`parse` knows, so custom subjects can be dead-lettered too): non-empty tokens,
        no whitespace, no ``*`` or ``>`` token. It must not itself be a dead-letter subject.
        """
        rel = self.relative(original)
        _check_concrete(original)
        if rel == "dlq" or rel.startswith("dlq."):
            raise SubjectError(f"cannot dead-letter a dead-letter subject: {original!r}")
        return f"{self.prefix}.dlq.{rel}"

    # -- patterns and prefix handling --------------------------------------------------------

    def pattern(self, relative: str) -> str:
        """Prefix a relative subject pattern: ``"chat.in.>"`` -> ``"eevee.chat.in.>"``.

        Tokens must be non-empty and free of whitespace; ``*`` and ``>`` are only allowed as
        whole tokens, and ``>`` only as the last one.
        """
        if _WHITESPACE_RE.search(relative):
            raise SubjectError(f"invalid pattern {relative!r}: contains whitespace")
        tokens = relative.split(".")
        last = len(tokens) - 1
        for i, token in enumerate(tokens):
            if not token:
                raise SubjectError(f"invalid pattern {relative!r}: empty token at position {i}")
            if token == ">":
                if i != last:
                    raise SubjectError(
                        f"invalid pattern {relative!r}: '>' is only allowed as the last token"
                    )
            elif token != "*" and ("*" in token or ">" in token):
                raise SubjectError(
                    f"invalid pattern {relative!r}: token {token!r} mixes a wildcard with "
                    "other characters"
                )
        return f"{self.prefix}.{relative}"

    def relative(self, subject: str) -> str:
        """Return ``subject`` without the prefix and its dot; raise if it is not under it."""
        head = self.prefix + "."
        if not subject.startswith(head) or len(subject) == len(head):
            raise SubjectError(f"subject {subject!r} is not under the prefix {self.prefix!r}")
        return subject[len(head) :]

    # -- parsing ----------------------------------------------------------------------------

    def parse(self, subject: str) -> ParsedSubject:
        """Take a subject of the tree apart; raise :class:`SubjectError` if it is not one.

        Wildcard patterns are not subjects and are rejected. A subject carrying a bounded
        token (a long network, room or command) raises :class:`IrreversibleTokenError`: the
        value is in the message body.
        """
        rel = self.relative(subject)
        tokens = rel.split(".")
        n = len(tokens)
        head = tokens[0]
        try:
            if head == "chat" and n >= 2:
                branch = tokens[1]
                if branch == "in" and n == 5:
                    return ParsedSubject(
                        kind="chat.in",
                        platform=validate_token(tokens[2], "platform"),
                        network=decode_token(tokens[3]),
                        room=decode_token(tokens[4]),
                    )
                if branch == "event" and n == 5:
                    return ParsedSubject(
                        kind="chat.event",
                        platform=validate_token(tokens[2], "platform"),
                        network=decode_token(tokens[3]),
                        event=validate_token(tokens[4], "event"),
                    )
                if branch in ("out", "ctl") and n == 4:
                    return ParsedSubject(
                        kind="chat.out" if branch == "out" else "chat.ctl",
                        platform=validate_token(tokens[2], "platform"),
                        network=decode_token(tokens[3]),
                    )
            elif head == "command" and n >= 2:
                if tokens[1] == "register" and n == 2:
                    return ParsedSubject(kind="command.register")
                if tokens[1] == "register":
                    return ParsedSubject(
                        kind="command.register",
                        operator_id=validate_operator_id(".".join(tokens[2:])),
                    )
                if tokens[1] == "run" and n == 3:
                    return ParsedSubject(kind="command.run", command=decode_token(tokens[2]))
                if tokens[1] == "sync" and n == 2:
                    return ParsedSubject(kind="command.sync")
                if tokens[1] == "rejected" and n >= 3:
                    return ParsedSubject(
                        kind="command.rejected",
                        operator_id=validate_operator_id(".".join(tokens[2:])),
                    )
            elif head == "log" and n >= 3:
                return ParsedSubject(
                    kind="log",
                    level=validate_token(tokens[1], "log level"),
                    operator_id=validate_operator_id(".".join(tokens[2:])),
                )
            elif head == "operator" and n >= 3:
                verb = tokens[1]
                op_id = validate_operator_id(".".join(tokens[2:]))
                if verb == "ready":
                    return ParsedSubject(kind="operator.ready", operator_id=op_id)
                if verb == "ping":
                    return ParsedSubject(kind="operator.ping", operator_id=op_id)
                if verb == "ctl":
                    return ParsedSubject(kind="operator.ctl", operator_id=op_id)
            elif head == "supervisor" and n == 2:
                if tokens[1] == "status":
                    return ParsedSubject(kind="supervisor.status")
                if tokens[1] == "ctl":
                    return ParsedSubject(kind="supervisor.ctl")
            elif head == "dlq" and n >= 2 and tokens[1] != "dlq":
                original = f"{self.prefix}.{rel[4:]}"
                _check_concrete(original)
                return ParsedSubject(kind="dlq", original=original)
        except IrreversibleTokenError as exc:
            raise IrreversibleTokenError(f"subject {subject!r}: {exc}", exc.readable) from exc
        except SubjectError as exc:
            raise SubjectError(f"invalid subject {subject!r}: {exc}") from exc
        raise SubjectError(f"subject {subject!r} is not part of the subject tree")
