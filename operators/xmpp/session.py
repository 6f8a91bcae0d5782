"""One XMPP session on the connector kit's link: :class:`XmppSession`.

A session connects (one attempt), waits until the server accepts it (a new session, or the
previous one resumed), says ``connected``, then reads the stream's events in order: room
messages and one-to-one messages become chat messages (each stored on the bus before the next
is read), room presences become chat events and join answers, invitations are accepted from
the allowed inviters. A ping (XEP-0199) every ``ping_interval`` notices a silent server. The
session ends when the connection does: raised as :class:`~eeveepy.errors.SessionError` (or
:class:`~eeveepy.errors.AuthenticationError`, :class:`~eeveepy.errors.UntrustedServerError`)
for the kit to reconnect with its backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from datetime import UTC, datetime
from typing import Any
from xml.etree.ElementTree import Element

from slixmpp import JID
from slixmpp.exceptions import IqError, IqTimeout

from eeveepy.aio import cancel_and_wait
from eeveepy.connector import ConnectionState, Expect, Link, Room
from eeveepy.errors import AuthenticationError, SessionError, UntrustedServerError
from eeveepy.protocol.models import ChatEvent, ChatEventType, ChatUser
from operators.xmpp.client import Event, XmppStream, tls_failure
from operators.xmpp.muc import Change, ChangeKind, Muc
from operators.xmpp.resume import ResumeFile
from operators.xmpp.rooms import RoomControl
from operators.xmpp.stanzas import Invite, MessageIn, read_message, read_presence
from operators.xmpp.text import fold_jid
from operators.xmpp.translate import PLATFORM, change_event, direct_message, room_message

__all__ = ["XmppSession"]


class XmppSession:
    """One connection of ``stream``, reported to ``link``; ``muc`` outlives it (a resumed
    stream is still in its rooms), and so does ``expect`` (answers to control requests)."""

    def __init__(
        self,
        stream: XmppStream,
        link: Link,
        muc: Muc,
        expect: Expect[Change],
        rooms: RoomControl,
        resume: ResumeFile | None = None,
    ) -> None:
        self.stream = stream
        self.link = link
        self.muc = muc
        self.expect = expect
        self.rooms = rooms
        self.resume = resume
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._early: list[Event] = []
        """Stanzas read before the session was reported started, handled right after."""
        self.settings = stream.settings

    @property
    def me(self) -> str:
        """The bot's bare JID."""
        return self.settings.jid

    async def run(self) -> None:
        stream = self.stream
        stream.sink = self._events.put_nowait
        pinger: asyncio.Task[None] | None = None
        try:
            resumed = await asyncio.wait_for(self._connect(), self.settings.connect_timeout)
            self.link.me = ChatUser(id=self.me, name=self.settings.nick, account=self.me)
            if not resumed:
                if self.resume is not None:
                    self.resume.clear()  # a new session: the old one is gone
                    stream.acknowledge_up_to(0)  # and its count starts again
                self.muc.reset()
                stream.send_presence()  # available: messages to the bare JID reach the bot
            again = stream.resend_pending(resumed)  # never acknowledged by the last session
            # Once the server answers a ping it has the presence too: "connected" then means
            # that messages to the bot's JID reach it.
            if not await self._answers():
                raise SessionError(f"no answer to a ping in {self.settings.ping_timeout} s")
            self.link.log.info(
                "session started", jid=stream.boundjid.full, resumed=resumed, resent=again
            )
            self.link.state(ConnectionState.CONNECTED, self.settings.server)
            pinger = asyncio.get_running_loop().create_task(self._ping(), name="xmpp-ping")
            for kind, data in self._early:  # before anything read since: none is lost
                await self._dispatch(kind, data)
            while True:
                await self._dispatch(*await self._events.get())
        finally:
            stream.sink = None
            if pinger is not None:
                await cancel_and_wait(pinger, timeout=1.0)
            self.expect.fail(SessionError("disconnected"))
            stream.drop()

    async def _connect(self) -> bool:
        """Connect and log in; True when the previous session was resumed."""
        self.stream.start()
        try:
            while True:
                kind, data = await self._events.get()
                if kind in ("started", "resumed"):
                    break
                if kind in ("message", "presence", "iq"):
                    self._early.append((kind, data))
                    continue
                self._failed(kind, data)
        except BaseException:
            self.stream.stop_trying()
            raise
        if self.settings.tls != "plain" and not self.stream.encrypted:
            raise UntrustedServerError(
                f"{self.settings.server} did not offer STARTTLS: refusing an unencrypted"
                " session (tls = plain allows one)"
            )
        return kind == "resumed"

    def _failed(self, kind: str, data: Any) -> None:
        """Raise what an event before the session started means (others are ignored)."""
        server = f"{self.settings.server}:{self.settings.server_port}"
        if kind == "untrusted" or isinstance(data, ssl.SSLError):
            raise UntrustedServerError(tls_failure(data))
        if kind == "failed":
            raise SessionError(f"cannot connect to {server}: {data}")
        if kind == "auth":
            raise AuthenticationError(f"{self.me}: the server refused the login (password?)")
        if kind == "stream_error":
            raise SessionError(f"stream error from {server}: {_stream_error(data)}")
        if kind == "disconnected":
            raise SessionError(f"disconnected by {server} while logging in ({data or 'closed'})")

    async def _answers(self) -> bool:
        """Ping the server (XEP-0199); False when it does not answer in ``ping_timeout``.
        Stanzas are handled in order, so an answer also says all sent before it arrived."""
        try:
            await self.stream.plugin["xep_0199"].ping(
                jid=JID(self.me.partition("@")[2]), timeout=self.settings.ping_timeout
            )
        except IqTimeout:
            return False
        except IqError:
            pass  # an error answer is an answer: the server is there
        return True

    async def _ping(self) -> None:
        s = self.settings
        while True:
            await asyncio.sleep(s.ping_interval)
            if self.stream.pending:
                self.stream.request_ack(again=True)  # in case an answer went missing
            if not await self._answers():
                self._events.put_nowait(("ping_timeout", s.ping_timeout))
                return

    # -- the stream's events -----------------------------------------------------------------

    async def _dispatch(self, kind: str, data: Any) -> None:
        try:
            await self._handle(kind, data)
        except (SessionError, asyncio.CancelledError):
            raise
        except Exception as exc:  # one odd stanza never ends the session
            self.link.log.exception("stanza not handled", kind=kind, error=repr(exc))

    async def _handle(self, kind: str, data: Any) -> None:
        if kind == "message":
            await self._message(read_message(data[0]))
            self._handled(data[1])
        elif kind == "presence":
            await self._presence(data[0])
            self._handled(data[1])
        elif kind == "iq":
            self._handled(data[1])
        elif kind == "disconnected":
            raise SessionError(f"connection lost ({data or 'closed'})")
        elif kind == "stream_error":
            raise SessionError(f"stream error: {_stream_error(data)}")
        elif kind == "ping_timeout":
            raise SessionError(f"no answer to a ping in {data} s")

    def _handled(self, count: int) -> None:
        """A stanza was handled: a process resuming this stream starts after it."""
        sm_id = self.stream.sm_id
        if self.resume is not None and sm_id is not None:
            self.resume.save(self.me, sm_id, count, self.stream.sent, self.muc)

    async def _message(self, msg: MessageIn) -> None:
        link, muc = self.link, self.muc
        if msg.kind == "error":
            link.log.warning("message refused by the server", sender=msg.sender, error=msg.error)
            return
        if msg.invite is not None:
            await self._invited(msg.invite)
            return
        if msg.kind == "groupchat":
            if msg.subject is not None and msg.body is None:
                room = msg.sender.partition("/")[0]
                if muc.subject(room):
                    await link.event(self._topic(room, msg))
                return
            chat = room_message(msg, muc, link.network, self.me)
        elif msg.kind in ("chat", "normal"):
            if fold_jid(msg.sender.partition("/")[0]) == fold_jid(self.me):
                return  # a carbon or a message of the bot's own account
            now = datetime.now(UTC)
            chat = direct_message(msg, muc, link.network, now, self.settings.max_delay)
        else:
            return
        if chat is not None:
            await link.message(chat)

    def _topic(self, room: str, msg: MessageIn) -> ChatEvent:
        nick = msg.sender.partition("/")[2]
        state = self.muc.get(room)
        real = state.occupants.get(nick) if state is not None and nick else None
        user = ChatUser(id=real or msg.sender, name=nick or room, account=real) if nick else None
        return ChatEvent(
            platform=PLATFORM,
            network=self.link.network,
            event=ChatEventType.TOPIC,
            room=room,
            user=user,
            text=msg.subject,
        )

    async def _invited(self, invite: Invite) -> None:
        inviter = invite.inviter.partition("/")[0]
        await self.link.event(
            ChatEvent(
                platform=PLATFORM,
                network=self.link.network,
                event=ChatEventType.INVITE,
                room=invite.room,
                # through a room, the inviter is only what the room claims: no account
                user=ChatUser(
                    id=inviter, name=inviter, account=None if invite.via_room else inviter
                ),
                text=invite.reason,
            )
        )
        joining = self.rooms.invited(invite)
        self.link.log.info("invited", room=invite.room, inviter=inviter, joining=joining)
        if joining:
            self.link.rooms.want(Room(invite.room, invite.password))

    async def _presence(self, xml: Element) -> None:
        for change in self.muc.presence(read_presence(xml)):
            if change.kind is ChangeKind.REFUSED:
                error = self.rooms.refused(change)
                if error is not None:
                    self.expect.feed(
                        Change(ChangeKind.REFUSED, change.room, change.nick, text=error)
                    )
                continue
            self.expect.feed(change)
            event = change_event(change, self.link.network)
            if event is not None:
                await self.link.event(event)


def _stream_error(error: Any) -> str:
    with contextlib.suppress(Exception):
        return f"{error['condition']} {error['text'] or ''}".strip()
    return str(error)
