"""A room's timeline between two syncs, complete and in order.

A homeserver's ``/sync`` returns at most the filter's ``limit`` of new events per room; when
more arrived it marks the timeline ``limited`` and leaves the older ones out. A bot that
reads only what ``/sync`` gave loses them (a burst of commands is partly unanswered): here the
gap is fetched with ``/messages``, backwards from the timeline's ``prev_batch`` to the token
of the previous sync (:func:`fill_gap`), and put before it.

What is then handed to the bus is decided by pure functions: :func:`after_own_join` drops
what was said before the bot joined (a room joined since the last sync shows its history),
:func:`fresh` what is older than the allowed age.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nio import AsyncClient, MessageDirection, RoomMessagesResponse

from operators.matrix.client import call

__all__ = ["after_own_join", "fill_gap", "fresh", "is_own_join"]

PAGE = 100
"""Events asked for per ``/messages`` request."""


async def fill_gap(
    client: AsyncClient,
    room_id: str,
    prev_batch: str,
    since: str,
    log: Any,
    *,
    most: int,
) -> list[Any]:
    """The events between the sync token ``since`` and ``prev_batch``, oldest first (at most
    ``most`` of them: the newest)."""
    newest_first: list[Any] = []
    token = prev_batch
    while len(newest_first) < most:
        page = min(PAGE, most - len(newest_first))

        def fetch(token: str = token, page: int = page) -> Any:
            return client.room_messages(
                room_id, start=token, end=since, direction=MessageDirection.back, limit=page
            )

        resp = await call(fetch, "messages", log)
        assert isinstance(resp, RoomMessagesResponse)
        newest_first.extend(resp.chunk)
        if not resp.chunk or not resp.end or resp.end == token:
            break
        token = resp.end
    if len(newest_first) >= most:
        log.warning("timeline gap larger than max_backfill: older events skipped", room=room_id)
    return newest_first[::-1]


def is_own_join(event: Mapping[str, Any], me: str) -> bool:
    """Whether ``event`` is the bot joining the room (not a profile change of its own)."""
    if event.get("type") != "m.room.member" or event.get("state_key") != me:
        return False
    content = event.get("content")
    unsigned = event.get("unsigned")
    prev = unsigned.get("prev_content") if isinstance(unsigned, dict) else None
    before = prev.get("membership") if isinstance(prev, dict) else None
    return isinstance(content, dict) and content.get("membership") == "join" and before != "join"


def after_own_join(events: Sequence[Mapping[str, Any]], me: str) -> Sequence[Mapping[str, Any]]:
    """``events`` from the bot's last join on (all of them when it did not join in them)."""
    for n in range(len(events) - 1, -1, -1):
        if is_own_join(events[n], me):
            return events[n:]
    return events


def fresh(event: Mapping[str, Any], now_ms: int, max_age: float) -> bool:
    """Whether ``event`` was sent less than ``max_age`` seconds before ``now_ms`` (ms since
    the epoch; an event without a timestamp counts as fresh)."""
    ts = event.get("origin_server_ts")
    if not isinstance(ts, int) or isinstance(ts, bool):
        return True
    return now_ms - ts <= max_age * 1000
