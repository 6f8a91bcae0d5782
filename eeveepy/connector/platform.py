"""What a chat platform implements to become a connector: :class:`Platform`.

The kit (:mod:`eeveepy.connector.runner`) owns everything that is not the platform:
reconnecting, the connection state and its events, the egress pump, ``chat.out`` and
``chat.ctl``, the rooms wanted, reloads and the goodbye at stop. A platform plugs in by
composition, implementing this small Protocol (a test fake subclasses it), and reaches the
bus only through the :class:`~eeveepy.connector.link.Link` it is given.

Translation between the platform's events and envelopes belongs in a pure module of the
platform's own (``operators/<platform>/translate.py``), testable without a socket.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, TypeVar

from pydantic import BaseModel

from eeveepy.connector.control import ControlRequest
from eeveepy.connector.egress import Confirmation, EgressLimits, Outbound
from eeveepy.connector.link import Link, Room
from eeveepy.errors import ConnectorError
from eeveepy.protocol.models import ConnectorControlResult, OutgoingMessage

S_contra = TypeVar("S_contra", bound=BaseModel, contravariant=True)


@dataclass(frozen=True)
class ReconnectPolicy:
    """Backoff between sessions: from ``initial`` doubling up to ``maximum`` seconds, with
    jitter but never below ``initial``; back to ``initial`` after a session that lasted
    ``healthy_after`` seconds (default 10 x ``initial``); after refused credentials, at least
    ``initial`` x 2^``auth_floor`` (:func:`~eeveepy.connector.reconnect.reconnect_delay`)."""

    initial: float = 1.0
    maximum: float = 60.0
    healthy_after: float | None = None
    auth_floor: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ConnectorError(
                f"invalid reconnect policy: 0 < initial ({self.initial}) <= maximum "
                f"({self.maximum})"
            )

    @property
    def healthy(self) -> float:
        """Seconds of session after which the backoff starts again from ``initial``."""
        return self.healthy_after if self.healthy_after is not None else 10 * self.initial


@dataclass(frozen=True)
class Plan:
    """What a platform's settings mean to the kit (:meth:`Platform.plan`)."""

    network: str
    """The network name on the bus (``chat.*.<platform>.<network>``)."""
    rooms: Sequence[Room] = ()
    """Rooms to be in from the start (``room.join`` requests add more)."""
    egress: EgressLimits = field(default_factory=EgressLimits)
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)


class Platform(Protocol[S_contra]):
    """A chat platform, as the connector kit drives it.

    Class attributes: ``name`` (the ``<platform>`` subject token: ``irc``), ``session_fields``
    (settings whose change needs a new session; the others apply live), ``actions`` (the
    control actions served: :class:`~eeveepy.connector.control.RoomAction` values and
    ``<name>.<word>`` ones).
    """

    name: ClassVar[str]
    session_fields: ClassVar[frozenset[str]]
    actions: ClassVar[frozenset[str]]

    def plan(self, settings: S_contra, operator_id: str) -> Plan:
        """Network, rooms and limits from the settings (pure)."""
        ...

    def fold(self, name: str) -> str:
        """A room or user name as the platform compares it (IRC: its casemapping)."""
        ...

    def check(self, req: ControlRequest) -> str | None:
        """Why ``req`` is invalid on this platform (a bad room name...), or None (pure)."""
        ...

    async def session(self, settings: S_contra, link: Link) -> None:
        """One session with the platform: connect, log in, say ``link.state(CONNECTED)``,
        then hand every message and event to ``link`` until the platform closes it (return)
        or it fails (raise :class:`~eeveepy.errors.SessionError`, ``OSError``...;
        :class:`~eeveepy.errors.AuthenticationError` for refused credentials). The kit
        cancels it to stop or to start a new one; close the connection in ``finally``."""
        ...

    async def join(self, rooms: Sequence[Room]) -> None:
        """Send the joins of ``rooms`` (after connecting, or a reload added them); the kit
        does not wait for answers, a room that cannot be joined shows in the session."""
        ...

    def render(self, out: OutgoingMessage) -> list[Outbound]:
        """The sends of one outgoing message, in order (pure: no I/O). Raise
        :class:`~eeveepy.errors.RefusedError` for one that must not be sent (dead-lettered)."""
        ...

    async def send(self, item: Outbound) -> Confirmation | None:
        """Send one item now; raise ``SessionError``/``OSError`` to have it tried again, or
        ``RefusedError`` to drop it. A platform whose server confirms receipt may return a
        confirmation (an awaitable that completes once the server has the item): the message
        then counts as sent, and its stored copy is acknowledged, only when it completes."""
        ...

    def send_now(self, item: Outbound) -> bool:
        """Send one item at once if that needs no waiting (the connection takes it without
        blocking) and return True; else send nothing and return False, and the kit
        :meth:`send` s it from its pump. Optional: this default always says False. Only for
        a platform without confirmations; the kit calls it only while nothing else is
        queued, so the order holds."""
        return False

    async def control(self, req: ControlRequest, link: Link) -> ConnectorControlResult:
        """Serve a valid request while connected (the kit checked both); the kit answers a
        ``TimeoutError`` as "no answer" and a ``ConnectorError`` with its text."""
        ...

    async def goodbye(self) -> None:
        """Leave politely (IRC: QUIT) at stop; the kit bounds it in time."""
        ...


def network_name(setting: str | None, operator_id: str, platform: str, fallback: str) -> str:
    """The network name on the bus: ``setting`` if given, else the operator id after
    ``<platform>.`` (``irc.libera`` -> ``libera``), else ``fallback`` (the host, the JID...)."""
    if setting:
        return setting
    head = f"{platform}."
    if operator_id.startswith(head) and len(operator_id) > len(head):
        return operator_id[len(head) :]
    return fallback


def changed_fields(old: BaseModel, new: BaseModel) -> set[str]:
    """Every settings field that differs between ``old`` and ``new``."""
    return {k for k in type(new).model_fields if getattr(old, k, None) != getattr(new, k)}


def session_changes(old: BaseModel, new: BaseModel, session_fields: frozenset[str]) -> set[str]:
    """The changed fields that need a new session (the platform's ``session_fields``)."""
    return changed_fields(old, new) & session_fields
