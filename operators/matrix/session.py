"""One session with the homeserver: log in, then sync until it fails, onto the kit's link.

The sync loop is written out here rather than taken from ``AsyncClient.sync_forever`` so
that the order of things is this connector's own:

1. The first sync of a session asks for the full state from the stored sync token (the
   client's room state, memberships and encryption, is rebuilt; what arrived while the
   connector was down comes with it). With no stored token (the very first start) the
   rooms' backlog is skipped: it was said before the bot was there.
2. A ``limited`` room timeline is completed from ``/messages`` before anything of it is
   handed on (:mod:`operators.matrix.timeline`), so a burst is answered whole and in order.
3. Each message is handed to the link and stored by the bus before the next one; only once
   the whole sync was handed on is its token stored, so a restart resumes there. A message
   read again after a crash is published under the same envelope id (derived from its event
   id), which the chat input stream keeps once.
4. Invites are accepted from the allow-list and rejected otherwise.

A sync is bounded by ``sync_timeout + request_timeout``: a homeserver that stopped answering
ends the session, and the kit reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

from nio import AsyncClient, MegolmEvent, SyncResponse
from nio.exceptions import EncryptionError

from eeveepy.connector import ConnectionState, Link
from eeveepy.errors import MatrixSessionError
from eeveepy.protocol.models import ChatEvent, ChatEventType, ChatUser
from operators.matrix.client import call, login
from operators.matrix.settings import MatrixSettings
from operators.matrix.store import StateStore
from operators.matrix.timeline import after_own_join, fill_gap, fresh
from operators.matrix.translate import PLATFORM, chat_event, chat_message, thread_of

__all__ = ["MatrixSession", "Threads"]

THREADS_KEPT: Final = 10_000
"""Event ids whose thread is remembered (answers to older ones ask the homeserver)."""
KEY_WAIT: Final = 60.0
"""Seconds an encrypted message is kept, and tried again after each sync, while its room key
has not arrived (keys travel separately and may come after the message)."""


class Threads(OrderedDict[str, str | None]):
    """The thread each recent message was in (None: not in a thread), bounded."""

    def note(self, event_id: str, thread: str | None) -> None:
        self[event_id] = thread
        if len(self) > THREADS_KEPT:
            self.popitem(last=False)


class MatrixSession:
    """The sync loop of one logged-in ``client``, handing what it reads to ``link``."""

    def __init__(
        self,
        client: AsyncClient,
        settings: MatrixSettings,
        store: StateStore,
        link: Link,
        threads: Threads,
    ) -> None:
        self.client = client
        self.s = settings
        self.store = store
        self.link = link
        self.threads = threads
        self.me = settings.user_id
        self.log = link.log
        self.undecrypted: list[tuple[str, Any, float]] = []
        """Encrypted messages waiting for their key: room, event, give-up time."""

    @property
    def live(self) -> MatrixSettings:
        """The operator's current settings (a reload changes them; the session's own,
        ``self.s``, are those it was opened with)."""
        current = self.link.op.settings
        return current if isinstance(current, MatrixSettings) else self.s

    @property
    def filter(self) -> dict[str, Any]:
        """The sync filter: the timeline limit; no presence."""
        return {"room": {"timeline": {"limit": self.s.timeline_limit}}, "presence": {"types": []}}

    async def run(self) -> None:
        """Log in, sync, hand everything on; until the homeserver fails (raises)."""
        await login(self.client, self.s, self.store, self.log)
        self.link.me = ChatUser(id=self.me, name=self.me, account=self.me)
        await self._keys()  # the device's keys first: who invites the bot can then share theirs
        since = self.store.sync_token()
        try:
            resp = await self._sync(since, full_state=True)
        except MatrixSessionError as exc:
            if since is None or exc.http_status != HTTPStatus.BAD_REQUEST:
                raise
            # A homeserver that was reset (or a hand-edited file) refuses the stored position
            # for good: asking again would fail the same way at every start.
            self.log.warning(
                "the homeserver refused the stored sync position: starting afresh; what was"
                " said while the connector was away is not answered",
                error=str(exc),
            )
            self.store.forget_sync_token()
            since = None
            resp = await self._sync(since, full_state=True)
        if since is None:
            self.log.info("first start: the rooms' backlog is not answered")
        await self._handle(resp, since, backlog=since is None)
        self.link.state(ConnectionState.CONNECTED, self.s.homeserver)
        while True:
            since = resp.next_batch
            await self._keys()
            resp = await self._sync(since)
            await self._handle(resp, since)

    async def _sync(self, since: str | None, *, full_state: bool = False) -> SyncResponse:
        wait = 0 if full_state else int(self.s.sync_timeout * 1000)

        def sync() -> Any:
            return self.client.sync(
                timeout=wait, sync_filter=self.filter, since=since, full_state=full_state or None
            )

        async with asyncio.timeout(self.s.sync_timeout + self.s.request_timeout):
            resp = await call(sync, "sync", self.log, max_wait=self.s.max_retry_after)
        assert isinstance(resp, SyncResponse)
        return resp

    async def _keys(self) -> None:
        """The end-to-end encryption chores between syncs (what ``sync_forever`` does)."""
        c = self.client
        if c.olm is None:
            return
        try:
            if c.should_upload_keys:
                await call(c.keys_upload, "keys upload", self.log)
            if c.should_query_keys:
                await call(c.keys_query, "keys query", self.log)
            if c.should_claim_keys:
                users = c.get_users_for_key_claiming()
                await call(lambda: c.keys_claim(users), "keys claim", self.log)
            await c.send_to_device_messages()
        except MatrixSessionError as exc:
            self.log.warning("encryption keys not updated", error=str(exc))

    async def _handle(
        self, resp: SyncResponse, since: str | None, *, backlog: bool = False
    ) -> None:
        """Hand one sync on to the bus, then store its token."""
        for room_id, info in resp.rooms.join.items():
            if backlog:
                continue
            tl, events = info.timeline, list(info.timeline.events)
            if tl.limited and since is not None and tl.prev_batch:
                most = self.live.max_backfill
                gap = await fill_gap(
                    self.client, room_id, tl.prev_batch, since, self.log, most=most
                )
                events = gap + events
                self.log.info("timeline gap filled", room=room_id, events=len(gap))
            for event in events:
                if isinstance(event, MegolmEvent):
                    await self._wait_for_key(room_id, event)
            plain = [e.source for e in events if not isinstance(e, MegolmEvent)]
            await self._room(room_id, after_own_join(plain, self.me))
        await self._decrypt_waiting()
        for room_id, left in resp.rooms.leave.items():
            for event in [] if backlog else left.timeline.events:
                await self._event(room_id, event.source)
        for room_id, invite in resp.rooms.invite.items():
            await self._invited(room_id, [e.source for e in invite.invite_state])
        self.store.save_sync_token(resp.next_batch)

    async def _wait_for_key(self, room_id: str, event: Any) -> None:
        """Keep an encrypted message whose room key has not arrived; ask the sender's devices
        for the key."""
        self.log.info("waiting for the key of an encrypted message", room=room_id)
        self.undecrypted.append((room_id, event, time.monotonic() + KEY_WAIT))
        try:
            await self.client.request_room_key(event)
        except Exception as exc:  # a key request is a courtesy: never fatal
            self.log.debug("room key not requested", error=repr(exc))

    async def _decrypt_waiting(self) -> None:
        """Publish the waiting messages whose key has come; give up on the too old."""
        waiting, self.undecrypted = self.undecrypted, []
        now = time.monotonic()
        for room_id, event, give_up in waiting:
            try:
                decrypted = self.client.decrypt_event(event)
            except EncryptionError:
                if now < give_up:
                    self.undecrypted.append((room_id, event, give_up))
                else:
                    self.log.warning("cannot decrypt a message: its key never came", room=room_id)
                continue
            await self._room(room_id, [decrypted.source])

    async def _room(self, room_id: str, events: list[Mapping[str, Any]] | Any) -> None:
        room = self.client.rooms.get(room_id)
        me_name = (room.user_name(self.me) if room else None) or ""

        def names(user: str) -> str:
            return (room.user_name(user) if room else None) or user

        now_ms = int(time.time() * 1000)
        stale = 0
        for event in events:
            msg = chat_message(
                event, room_id, self.link.network, names, me=self.me, my_name=me_name
            )
            if msg is None:
                await self._event(room_id, event)
                continue
            assert msg.message_id is not None
            self.threads.note(msg.message_id, thread_of(event.get("content") or {}))
            if not fresh(event, now_ms, self.live.max_command_age):
                stale += 1
                continue
            msg_id = f"{PLATFORM}~{self.link.network}~{msg.message_id}"
            await self.link.message(msg, msg_id=msg_id)
        if stale:
            self.log.info("old messages not published", room=room_id, count=stale)

    async def _event(self, room_id: str, event: Mapping[str, Any]) -> None:
        room = self.client.rooms.get(room_id)

        def names(user: str) -> str:
            return (room.user_name(user) if room else None) or user

        ev = chat_event(event, room_id, self.link.network, names)
        if ev is not None:
            await self.link.event(ev)

    async def _invited(self, room_id: str, state: list[Mapping[str, Any]]) -> None:
        """An invite of the bot to ``room_id``: told, then accepted or rejected."""
        inviter = next(
            (
                str(e.get("sender"))
                for e in state
                if e.get("type") == "m.room.member" and e.get("state_key") == self.me
            ),
            "",
        )
        # A room the connector wants (settings, a join request) is joined whoever invites.
        allowed = room_id in self.link.rooms or (
            bool(inviter) and self.live.allowed_inviter(inviter)
        )
        await self.link.event(
            ChatEvent(
                platform=PLATFORM,
                network=self.link.network,
                event=ChatEventType.INVITE,
                room=room_id,
                user=ChatUser(id=inviter, name=inviter, account=inviter) if inviter else None,
                target=self.link.me,
                text="accepted" if allowed else "refused",
            )
        )
        try:
            if allowed:
                await call(lambda: self.client.join(room_id), "join", self.log)
                self.log.info("invite accepted", room=room_id, inviter=inviter)
            else:
                await call(lambda: self.client.room_leave(room_id), "reject invite", self.log)
                self.log.info("invite refused: not in invite_allow", room=room_id, inviter=inviter)
        except MatrixSessionError as exc:
            self.log.warning("invite not answered", room=room_id, error=str(exc))
