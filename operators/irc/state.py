"""What the IRC client knows about its server and itself during one connection (no I/O).

:class:`ServerState` holds the bot's nick, the server's ISUPPORT tokens, the capabilities
acknowledged, the channels joined and the services accounts seen, and answers the questions
that depend on them: are two names the same (the server's case mapping), is a name a channel,
is it one valid channel of this server. The protocol client keeps it up to date; translation
and control requests read it.
"""

from __future__ import annotations

from operators.irc.events import IrcUser
from operators.irc.safety import (
    DEFAULT_CHANTYPES,
    MAX_CHANNEL_BYTES,
    MAX_NICK_BYTES,
    channel_problem,
    nick_problem,
    target_problem,
)
from operators.irc.text import irc_lower

__all__ = ["ServerState"]


class ServerState:
    """One connection's view of the server; ``want_nick`` (the nick to hold) outlives it."""

    def __init__(self, want_nick: str) -> None:
        self.want_nick = want_nick
        self.reset()

    def reset(self) -> None:
        """Forget everything learnt from the server (a new connection starts afresh)."""
        self.nick = ""
        self.registered = False
        self.server = ""
        self.user_host: str | None = None
        """The bot's ``user@host`` as others see it, once known (line length budget)."""
        self.account: str | None = None
        self.caps: set[str] = set()
        self.isupport: dict[str, str] = {}
        self.joined: dict[str, str] = {}
        """Channels the bot is in: lower-cased name -> name."""
        self.accounts: dict[str, str] = {}
        """Services accounts of users: lower-cased nick -> account."""

    # -- names -------------------------------------------------------------------------------

    def lower(self, name: str) -> str:
        """``name`` lower-cased by the server's case mapping (rfc1459 until it says)."""
        return irc_lower(name, self.isupport.get("CASEMAPPING", "rfc1459"))

    def same(self, a: str, b: str) -> bool:
        """Whether the server takes ``a`` and ``b`` for the same nick or channel."""
        return self.lower(a) == self.lower(b)

    @property
    def chantypes(self) -> str:
        """The server's channel prefixes (``CHANTYPES``)."""
        return self.isupport.get("CHANTYPES", DEFAULT_CHANTYPES)

    def is_channel(self, name: str) -> bool:
        """Whether ``name`` starts with one of the server's channel prefixes."""
        return bool(name) and name[0] in self.chantypes

    def isupport_int(self, key: str, default: int) -> int:
        """An ISUPPORT token's positive integer value, else ``default``."""
        value = self.isupport.get(key, "")
        return int(value) if value.isascii() and value.isdigit() and int(value) > 0 else default

    @property
    def prefix_chars(self) -> str:
        """Membership prefixes (``@+``...) shown before nicks in NAMES replies."""
        prefix = self.isupport.get("PREFIX", "(ov)@+")
        return prefix.partition(")")[2] or "@+"

    def channel_problem(self, name: str) -> str | None:
        """Why ``name`` is not one channel of this server (its CHANTYPES, CHANNELLEN), or None."""
        return channel_problem(
            name, self.chantypes, self.isupport_int("CHANNELLEN", MAX_CHANNEL_BYTES)
        )

    def nick_problem(self, name: str) -> str | None:
        """Why ``name`` is not one nick on this server (its NICKLEN), or None."""
        return nick_problem(name, self.chantypes, self.isupport_int("NICKLEN", MAX_NICK_BYTES))

    def target_problem(self, target: str) -> str | None:
        """Why ``target`` is not one channel or one nick of this server, or None."""
        return target_problem(
            target,
            self.chantypes,
            self.isupport_int("CHANNELLEN", MAX_CHANNEL_BYTES),
            self.isupport_int("NICKLEN", MAX_NICK_BYTES),
        )

    # -- users -------------------------------------------------------------------------------

    def user(self, nick: str, host: str | None, account: str | None = None) -> IrcUser:
        """``nick`` with its account: ``account`` if given, else the one last seen."""
        return IrcUser(nick, host, account or self.accounts.get(self.lower(nick)))

    def me(self) -> IrcUser:
        """The bot itself (its nick, or the one it wants before registration)."""
        nick = self.nick or self.want_nick
        return IrcUser(nick, self.user_host, self.account)

    def set_account(self, nick: str, account: str) -> None:
        """Remember ``nick``'s account; ``*``, ``0`` or nothing means logged out."""
        key = self.lower(nick)
        if account in ("*", "0", ""):
            self.accounts.pop(key, None)
        else:
            self.accounts[key] = account
