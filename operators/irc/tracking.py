"""Who is where: channels joined, users' accounts and chat traffic, from the lines that show
them (no I/O).

:class:`Tracker` keeps the :class:`~operators.irc.state.ServerState` up to date from ``JOIN``,
``PART``, ``KICK``, ``QUIT``, ``NICK``, ``CHGHOST``, ``ACCOUNT`` and WHOX replies, and reports
them, with ``TOPIC``, ``INVITE``, ``PRIVMSG`` and ``NOTICE``, as
:mod:`~operators.irc.events`. Services accounts come from ``extended-join``, the
``account`` message tag, ``account-notify`` and WHOX. When the holder of the wanted nick
leaves or renames, the nick is asked for again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from operators.irc.events import (
    CtcpQuery,
    Event,
    Invited,
    Joined,
    Kicked,
    Message,
    NickChanged,
    OwnNickChanged,
    Parted,
    Quit,
    ServerNotice,
    Style,
    TopicChanged,
)
from operators.irc.lines import IrcLine, split_source
from operators.irc.state import ServerState
from operators.irc.text import CTCP, parse_ctcp_action

__all__ = ["WHOX_TOKEN", "Tracker"]

WHOX_TOKEN: Final = "417"
"""Marks the WHOX replies to the client's own ``WHO #chan %tuhnfa,417``."""


class Tracker:
    """Handlers of the lines about channels and users.

    ``send(command, *params)`` queues a line, ``emit`` reports an event, ``reclaim`` asks for
    the wanted nick again (when the bot has another one).
    """

    def __init__(
        self,
        state: ServerState,
        send: Callable[..., None],
        emit: Callable[[Event], None],
        reclaim: Callable[[], bool],
    ) -> None:
        self.state = state
        self._send = send
        self._emit = emit
        self._reclaim = reclaim

    def join(self, line: IrcLine) -> None:
        st = self.state
        nick, host = split_source(line.source)
        chan = line.param(0)
        account: str | None = None
        if "extended-join" in st.caps and len(line.params) >= 2:
            account = None if line.params[1] == "*" else line.params[1]
            st.set_account(nick, line.params[1])
        elif "account" in line.tags:
            account = line.tags["account"]
            st.set_account(nick, account)
        if st.same(nick, st.nick):
            st.user_host = host or st.user_host
            st.joined[st.lower(chan)] = chan
            if "WHOX" in st.isupport:
                self._send("WHO", chan, f"%tuhnfa,{WHOX_TOKEN}")
        self._emit(Joined(chan, st.user(nick, host, account)))

    def whox(self, line: IrcLine) -> None:
        if line.param(1) == WHOX_TOKEN and len(line.params) >= 7:
            self.state.set_account(line.params[4], line.params[6])

    def account(self, line: IrcLine) -> None:
        self.state.set_account(split_source(line.source)[0], line.param(0))

    def part(self, line: IrcLine) -> None:
        st = self.state
        nick, host = split_source(line.source)
        chan = line.param(0)
        if st.same(nick, st.nick):
            st.joined.pop(st.lower(chan), None)
        reason = line.params[1] if len(line.params) > 1 else None
        self._emit(Parted(chan, st.user(nick, host), reason))

    def kick(self, line: IrcLine) -> None:
        st = self.state
        nick, host = split_source(line.source)
        chan, victim = line.param(0), line.param(1)
        if st.same(victim, st.nick):
            st.joined.pop(st.lower(chan), None)
        reason = line.params[2] if len(line.params) > 2 else None
        self._emit(Kicked(chan, st.user(nick, host), st.user(victim, None), reason))

    def quit(self, line: IrcLine) -> None:
        st = self.state
        nick, host = split_source(line.source)
        user = st.user(nick, host)
        st.accounts.pop(st.lower(nick), None)
        self._emit(Quit(user, line.param(0) or None))
        if st.same(nick, st.want_nick):
            self._reclaim()

    def nick(self, line: IrcLine) -> None:
        st = self.state
        old, host = split_source(line.source)
        new = line.param(0)
        if st.same(old, st.nick):
            st.nick = new
            self._emit(OwnNickChanged(new))
        key = st.lower(old)
        if key in st.accounts:
            st.accounts[st.lower(new)] = st.accounts.pop(key)
        self._emit(NickChanged(st.user(old, host), new))
        if st.same(old, st.want_nick):
            self._reclaim()

    def topic(self, line: IrcLine) -> None:
        nick, host = split_source(line.source)
        self._emit(TopicChanged(line.param(0), self.state.user(nick, host), line.param(1)))

    def invite(self, line: IrcLine) -> None:
        st = self.state
        nick, host = split_source(line.source)
        self._emit(Invited(line.param(1), st.user(nick, host), st.user(line.param(0), None)))

    def chghost(self, line: IrcLine) -> None:
        nick, _ = split_source(line.source)
        if self.state.same(nick, self.state.nick) and len(line.params) >= 2:
            self.state.user_host = f"{line.params[0]}@{line.params[1]}"

    def privmsg(self, line: IrcLine) -> None:
        """A PRIVMSG (or a CTCP request in one)."""
        self._message(line, notice=False)

    def notice(self, line: IrcLine) -> None:
        """A NOTICE (a CTCP in one is a reply, never answered)."""
        self._message(line, notice=True)

    def _message(self, line: IrcLine, *, notice: bool) -> None:
        if len(line.params) < 2:
            return
        st = self.state
        nick, host = split_source(line.source)
        target, raw = line.params[0], line.params[-1]
        if not st.registered or not nick or (host is None and "." in nick):
            self._emit(ServerNotice(line.source, raw))
            return
        if st.same(nick, st.nick):
            return  # our own line echoed back (echo-message, bouncers)
        room = target
        statusmsg = st.isupport.get("STATUSMSG", "")
        while room and room[0] in statusmsg and len(room) > 1:
            room = room[1:]
        is_chan = st.is_channel(room)
        text = raw
        style: Style = "notice" if notice else "message"
        if raw.startswith(CTCP):
            action = parse_ctcp_action(raw)
            if action is None:
                if not notice:  # a CTCP reply (in a NOTICE) is never answered
                    word, _, arg = raw.strip(CTCP).partition(" ")
                    self._emit(CtcpQuery(nick, word.upper(), arg))
                return
            style, text = "action", action
        account = line.tags.get("account")
        if account:
            st.set_account(nick, account)
        self._emit(
            Message(
                st.user(nick, host, account),
                room if is_chan else nick,
                not is_chan,
                text,
                raw,
                style,
                line.tags.get("msgid"),
                line.tags.get("+draft/reply") or line.tags.get("+reply") or None,
            )
        )
