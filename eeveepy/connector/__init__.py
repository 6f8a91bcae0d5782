"""The connector kit: what every chat connector needs that is not the platform.

A connector implements :class:`Platform` (open a session, render and send outgoing messages,
serve control requests) and :func:`connector_operator` makes it an operator; the platform
reaches the bus only through its :class:`Link`. See docs/connectors.md.

=================  ==============================================================
module             what
=================  ==============================================================
``platform``       the :class:`Platform` Protocol, :class:`Plan`, reload diffs
``link``           :class:`Link` (messages, events, state to the bus), rooms wanted
``state``          :class:`ConnectionState` and its deduplicated events
``runner``         :class:`Connector`: sessions, backoff, reloads, goodbye
``reconnect``      the delay before the next session (jittered, floored, slow after auth)
``egress``         the send pump: flood control, fair queue, cap, put-back
``flood``          :class:`TokenBucket`, :class:`FairQueue` (pure)
``outbox``         ``chat.out``: each message sent once, acknowledged once sent
``desk``           ``chat.ctl`` served concurrently, validated
``control``        :class:`ControlRequest` (rooms, users, namespaced actions), :class:`Expect`
=================  ==============================================================
"""

from __future__ import annotations

from eeveepy.connector.control import ControlRequest, Expect, RoomAction, refused
from eeveepy.connector.egress import EgressLimits, Outbound
from eeveepy.connector.flood import FairQueue, TokenBucket
from eeveepy.connector.link import Link, Room
from eeveepy.connector.platform import Plan, Platform, ReconnectPolicy
from eeveepy.connector.runner import Connector, connector_operator
from eeveepy.connector.state import ConnectionState

__all__ = [
    "ConnectionState",
    "Connector",
    "ControlRequest",
    "EgressLimits",
    "Expect",
    "FairQueue",
    "Link",
    "Outbound",
    "Plan",
    "Platform",
    "ReconnectPolicy",
    "Room",
    "RoomAction",
    "TokenBucket",
    "connector_operator",
    "refused",
]
