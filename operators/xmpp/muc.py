"""The rooms the bot is in, as it learns from presences (sans-I/O): :class:`Muc`.

XMPP multi-user chat tells a client everything through presences from ``room@service/nick``:
the occupants already there, then the client's own presence (status 110: joined), then the
history and the subject (the room is *live* from the subject on: anything before it is
history, never a command). Later presences say who joins, leaves, is kicked (307) or banned
(301), or changes nick (303). An error presence to a join says why it failed: ``conflict``
(the nick is taken: try the next), ``not-authorized`` (password), ``forbidden`` (banned)...

:meth:`Muc.presence` folds a presence into the state and says what happened, as a
:class:`Change`; the platform turns changes into chat events and answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from operators.xmpp.stanzas import PresenceIn
from operators.xmpp.text import fold_jid

__all__ = ["Change", "ChangeKind", "Muc", "RoomState"]


class ChangeKind(StrEnum):
    """What a room presence meant."""

    JOINED = "joined"  # the bot is in the room
    LEFT = "left"  # the bot is out (parted, or the room went away)
    KICKED = "kicked"  # the bot was kicked or banned
    REFUSED = "refused"  # the bot's join failed (error presence)
    DENIED = "denied"  # in the room, the bot's presence was refused (a nick change...)
    JOIN = "join"  # someone else joined
    PART = "part"
    KICK = "kick"
    NICK = "nick"


@dataclass(frozen=True)
class Change:
    """One thing a presence told about a room."""

    kind: ChangeKind
    room: str
    nick: str
    real_jid: str | None = None
    text: str | None = None
    """The reason (kick, part), the new nick (nick) or the error (refused)."""


@dataclass
class RoomState:
    """A room the bot is joining or in."""

    jid: str
    nick: str
    password: str | None = None
    joined: bool = False
    live: bool = False
    occupants: dict[str, str | None] = field(default_factory=dict)
    """Nick -> real bare JID (None in a room that hides them)."""
    tried: list[str] = field(default_factory=list)
    """Nicks tried since the last join request (a conflict moves to the next)."""


class Muc:
    """Every room the bot wants or is in, by folded room JID."""

    def __init__(self) -> None:
        self.rooms: dict[str, RoomState] = {}

    def get(self, room: str) -> RoomState | None:
        return self.rooms.get(fold_jid(room))

    def joining(self, room: str, nick: str, password: str | None = None) -> RoomState:
        """A join of ``room`` as ``nick`` is being sent (again, after a conflict)."""
        key = fold_jid(room)
        state = self.rooms.get(key)
        if state is None:
            state = self.rooms[key] = RoomState(room, nick, password)
        state.nick, state.password = nick, password
        if nick not in state.tried:
            state.tried.append(nick)
        return state

    def forget(self, room: str) -> RoomState | None:
        """The bot left ``room`` for good (a part)."""
        return self.rooms.pop(fold_jid(room), None)

    def restore(self, rooms: list[RoomState]) -> None:
        """The rooms a resumed stream is still in (saved by the process before this one)."""
        self.rooms = {fold_jid(r.jid): r for r in rooms}

    def reset(self) -> None:
        """A new stream (not resumed): the server forgot every room the bot was in."""
        for state in self.rooms.values():
            state.joined = state.live = False
            state.occupants.clear()
            state.tried.clear()

    def joined(self) -> list[RoomState]:
        return [s for s in self.rooms.values() if s.joined]

    def is_own(self, room: str, nick: str) -> bool:
        """True when ``nick`` is the bot's own in ``room`` (its reflected messages)."""
        state = self.get(room)
        return state is not None and state.nick == nick

    def subject(self, room: str) -> bool:
        """A subject arrived: the room is live from now on. True if it was already live (a
        change of subject, worth an event) rather than the one sent after joining."""
        state = self.get(room)
        if state is None or not state.joined:
            return False
        was, state.live = state.live, True
        return was

    def presence(self, p: PresenceIn) -> list[Change]:
        """Fold a presence from ``room/nick`` into the state; what it meant."""
        room, _, nick = p.sender.partition("/")
        state = self.get(room)
        if state is None or (not nick and p.error is None):
            return []  # not a room of ours, or the room's own presence (its avatar...)
        if p.error is not None:
            kind = ChangeKind.DENIED if state.joined else ChangeKind.REFUSED
            return [Change(kind, state.jid, state.nick, text=p.error)]
        own = "110" in p.codes or (not state.joined and nick == state.nick)
        real = p.real_jid.partition("/")[0] if p.real_jid else None
        if p.available:
            return self._available(state, nick, real, own)
        return self._unavailable(state, p, nick, real, own)

    def _available(self, state: RoomState, nick: str, real: str | None, own: bool) -> list[Change]:
        if own:
            state.nick = nick  # the room may have changed it (status 210)
            state.occupants[nick] = real
            if state.joined:
                return []
            state.joined, state.live = True, False
            state.tried.clear()
            return [Change(ChangeKind.JOINED, state.jid, nick, real)]
        known = nick in state.occupants
        state.occupants[nick] = real
        if known or not state.joined or not state.live:
            return []  # a status update, or the roster sent on joining
        return [Change(ChangeKind.JOIN, state.jid, nick, real)]

    def _unavailable(
        self, state: RoomState, p: PresenceIn, nick: str, real: str | None, own: bool
    ) -> list[Change]:
        state.occupants.pop(nick, None)
        if "303" in p.codes and p.new_nick:  # a nick change: the new presence follows
            if own:
                state.nick = p.new_nick
            state.occupants[p.new_nick] = real
            return [Change(ChangeKind.NICK, state.jid, nick, real, p.new_nick)]
        kicked = "307" in p.codes or "301" in p.codes
        if own:
            state.joined = state.live = False
            state.occupants.clear()
            kind = ChangeKind.KICKED if kicked else ChangeKind.LEFT
            return [Change(kind, state.jid, nick, real, p.reason)]
        kind = ChangeKind.KICK if kicked else ChangeKind.PART
        return [Change(kind, state.jid, nick, real, p.reason)]
