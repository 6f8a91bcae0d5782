"""A connector's connection state, and which chat events its changes are worth.

The platform says where its session stands (``link.state(ConnectionState.CONNECTED)``); the
runner says the rest (connecting, lost, refused credentials). :class:`StateTracker` turns those
changes into at most one ``connected`` or ``disconnected`` chat event each, so a flapping
session or a platform that reports twice never tells the bus the same thing twice in a row.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from enum import StrEnum

from eeveepy.protocol.models import ChatEventType


class ConnectionState(StrEnum):
    """Where a connector's session with its chat platform stands."""

    DISCONNECTED = "disconnected"
    """No session: not started yet, or waiting to reconnect."""
    CONNECTING = "connecting"
    """A session is being opened (connect, log in, register)."""
    CONNECTED = "connected"
    """The platform accepted the session: messages flow, control requests are served."""
    AUTH_FAILED = "auth_failed"
    """The platform refused the credentials; retried slowly."""


class StateTracker:
    """The current :class:`ConnectionState`, its age, and the events its changes are worth.

    ``up`` is set while connected (the egress pump waits on it). ``clock`` returns seconds
    (default :func:`time.monotonic`).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.state = ConnectionState.DISCONNECTED
        self.up = asyncio.Event()
        self._clock = clock
        self._since = clock()
        self._last_uptime = 0.0

    @property
    def connected(self) -> bool:
        """True while the session is accepted by the platform."""
        return self.state is ConnectionState.CONNECTED

    def connected_for(self) -> float:
        """Seconds since the session was accepted; 0 when not connected."""
        return self._clock() - self._since if self.connected else 0.0

    def uptime(self) -> float:
        """How long the current (or the last) session was connected, in seconds; 0 once a
        new session is connecting."""
        return self.connected_for() if self.connected else self._last_uptime

    def change(self, new: ConnectionState) -> ChatEventType | None:
        """Move to ``new``; the chat event the change is worth, if any.

        ``connected`` when the session comes up; ``disconnected`` when it goes down, and when
        credentials are refused (told on every attempt, connected before or not). Nothing
        when the state does not change.
        """
        old, self.state = self.state, new
        if new is old:
            return None
        now = self._clock()
        if old is ConnectionState.CONNECTED:
            self._last_uptime = now - self._since
        elif new is ConnectionState.CONNECTING:
            self._last_uptime = 0.0
        self._since = now
        if new is ConnectionState.CONNECTED:
            self.up.set()
            return ChatEventType.CONNECTED
        self.up.clear()
        if old is ConnectionState.CONNECTED or new is ConnectionState.AUTH_FAILED:
            return ChatEventType.DISCONNECTED
        return None
