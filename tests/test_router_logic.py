"""The router's pure logic, no server: splitting lines, arguments, the registry, identities
and permissions, scope, rate limits."""

from __future__ import annotations

import re

import pytest

from eeveepy.protocol.models import ChatMessage, ChatUser, CommandScope, RateLimit
from operators.router.parse import (
    CommandLine,
    parse_arguments,
    parse_long_args,
    prefixes_for,
    split_command,
)
from operators.router.permissions import Permissions, Rule, glob_match, identities, in_scope
from operators.router.ratelimit import Booking, RateLimiter, book
from operators.router.registry import Registry
from operators.router.settings import RouterSettings
from tests.test_commands import reg


def msg(
    text: str = "",
    *,
    platform: str = "irc",
    network: str = "libera",
    room: str = "#ops",
    user: str = "alice",
    host: str | None = None,
    account: str | None = None,
    private: bool = False,
) -> ChatMessage:
    return ChatMessage(
        platform=platform,
        network=network,
        room=room,
        user=ChatUser(id=user, name=user, host=host, account=account),
        text=text,
        private=private,
    )


# -- splitting a line -------------------------------------------------------------------------


def split(text: str, *, private: bool = False, prefixes: tuple[str, ...] = ("!",)) -> object:
    line = split_command(text, prefixes=prefixes, names=["eevee"], private=private)
    return None if line is None else (line.name, line.text, line.via)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("!echo hi", ("echo", "hi", "prefix")),
        ("  !Echo   hi  there ", ("echo", "hi  there", "prefix")),
        ("!ping", ("ping", "", "prefix")),
        ("eevee: echo hi", ("echo", "hi", "name")),
        ("Eevee, echo hi", ("echo", "hi", "name")),
        ("@eevee echo hi", ("echo", "hi", "name")),
        ("@eevee: echo hi", ("echo", "hi", "name")),
        ("eevee: !echo hi", ("echo", "hi", "name")),
        ("echo hi", None),
        ("eevee echo hi", None),  # no ':' or ',' and no '@': just talk about the bot
        ("eeveefan: echo hi", None),
        ("! echo", None),
        ("!!!", None),
        ("!", None),
        ("eevee:", None),
        ("hello !echo", None),
    ],
)
def test_split_in_a_room(text: str, expected: object) -> None:
    assert split(text) == expected


def test_split_private_needs_no_prefix() -> None:
    assert split("echo hi", private=True) == ("echo", "hi", "private")
    assert split("!echo hi", private=True) == ("echo", "hi", "prefix")
    assert split("eevee: echo hi", private=True) == ("echo", "hi", "name")
    assert split("what's up", private=True) is None


def test_split_with_other_prefixes() -> None:
    assert split(".echo hi", prefixes=(".", "!")) == ("echo", "hi", "prefix")
    assert split("bot> echo hi", prefixes=("bot> ",)) == ("echo", "hi", "prefix")
    assert split("bot> echo hi", prefixes=("bot>",)) is None  # prefixes are literal
    assert split("!echo hi", prefixes=()) is None  # a room with no prefix: only addressing
    assert split("eevee: echo hi", prefixes=()) == ("echo", "hi", "name")
    # the longest prefix wins: "!!" is not "!" followed by "!x"
    assert split("!!x", prefixes=("!", "!!")) == ("x", "", "prefix")
    assert CommandLine("a", "", "prefix").name == "a"


def test_prefix_overrides_most_specific_wins() -> None:
    overrides = {"irc": ["."], "irc/libera": ["?"], "irc/libera/#quiet": []}
    assert prefixes_for(["!"], overrides, "irc", "libera", "#ops") == ["?"]
    assert prefixes_for(["!"], overrides, "irc", "libera", "#quiet") == []
    assert prefixes_for(["!"], overrides, "irc", "oftc", "#ops") == ["."]
    assert prefixes_for(["!"], overrides, "matrix", "main", "!room:x") == ["!"]


# -- arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "args", "rest"),
    [
        ("", {}, ""),
        ("just text", {}, "just text"),
        ("keep  the   spacing", {}, "keep  the   spacing"),
        ("--reason just because", {"reason": "just because"}, ""),
        ("--force", {"force": "true"}, ""),
        ("app --force --env prod", {"force": "true", "env": "prod"}, "app"),
        # keys as written, everything after the key's space is the value (ChatOps RPC)
        ("deploy app --env=prod eu --Dry-Run", {"env=prod": "eu", "Dry-Run": "true"}, "deploy app"),
        (
            "--fruit apple --vegetable green celery",
            {"fruit": "apple", "vegetable": "green celery"},
            "",
        ),
        ("--this-is-sparta", {"this-is-sparta": "true"}, ""),
        ("\u2014force x", {}, "\u2014force x"),  # only two ASCII dashes make an argument
        ("a --k v -- tail", {"k": "v", "": "tail"}, "a"),
        ("x -y --5 -", {"5": "-"}, "x -y"),
        ("a--b c--d", {}, "a--b c--d"),  # no space before the dashes: text
        ("--k v --k w", {"k": "v"}, ""),  # the first of a repeated key wins
        ("--k   spaced  value  ", {"k": "spaced  value"}, ""),
        ("--empty  --x", {"empty": "true", "x": "true"}, ""),
    ],
)
def test_long_args(text: str, args: dict[str, str], rest: str) -> None:
    assert parse_long_args(text) == (args, rest)


def test_pattern_and_flags_together() -> None:
    pattern = re.compile(r"(?P<app>\w+)(?: (?P<env>\w+))?")
    assert parse_arguments(pattern, "web prod") == ({"app": "web", "env": "prod"}, "web prod")
    # a group that took no part may come as a flag, and a flag wins over a group (ChatOps RPC)
    assert parse_arguments(pattern, "web --env prod") == ({"app": "web", "env": "prod"}, "web")
    assert parse_arguments(pattern, "web dev --env prod")[0]["env"] == "prod"  # type: ignore[index]
    assert parse_arguments(pattern, "") is None  # fullmatch: usage
    assert parse_arguments(pattern, "web prod extra") is None
    assert parse_arguments(None, "anything --x") == ({"x": "true"}, "anything")


# -- the registry ---------------------------------------------------------------------------


def test_registry_replicas_clashes_aliases() -> None:
    registry = Registry()
    echo_a = reg(aliases=["say"], usage="!echo TEXT")
    assert registry.conflicts(echo_a) == []
    assert registry.add(echo_a)
    assert not registry.add(echo_a)  # unchanged
    replica = echo_a.model_copy(update={"operator": "echo.b"})
    assert registry.conflicts(replica) == []  # same definition: a replica
    registry.add(replica)
    assert registry.operators("echo") == ["echo", "echo.b"]
    other = reg(operator="intruder", usage="different")
    assert registry.conflicts(other) == [echo_a, replica]
    assert registry.conflicts(reg("talk", "x", aliases=["say"])) == [echo_a, replica]
    assert registry.conflicts(reg("say", "x")) == [echo_a, replica]
    # the same operator changing its own definition replaces it (others still clash)
    assert registry.conflicts(echo_a.model_copy(update={"usage": "new"})) == [replica]
    lookup = registry.lookup("say")
    assert lookup is not None
    assert lookup.name == "echo"
    assert registry.lookup("nope") is None
    registry.add(reg("ping", "ping"))
    assert [r.name for r in registry.commands()] == ["echo", "ping"]
    assert registry.remove("ping", "ping")
    assert not registry.remove("ping", "ping")
    assert registry.lookup("ping") is None
    registry.add(reg("grep", "g", pattern=r"(?P<w>\w+)"))
    grep = registry.pattern("grep")
    assert grep is not None
    assert grep.fullmatch("abc")
    assert len(registry) == 3


# -- identities and permissions ---------------------------------------------------------------


def test_identities() -> None:
    m = msg(user="alice", host="~alice@staff/alice", account="alice")
    assert identities(m.platform, m.network, m.user) == [
        "irc:libera:alice",
        "irc:libera:alice!~alice@staff/alice",
        "irc:libera:account:alice",
    ]
    x = msg(platform="xmpp", network="main", user="bob@example.org")
    assert identities(x.platform, x.network, x.user) == [
        "xmpp:main:bob@example.org",
        "xmpp:bob@example.org",
    ]


def test_glob_is_case_insensitive_and_brackets_are_literal() -> None:
    assert glob_match("irc:libera:*!*@staff/*", "irc:libera:Alice!~a@staff/alice")
    assert glob_match("IRC:LIBERA:alice", "irc:libera:alice")
    assert glob_match("irc:libera:nick[away]", "irc:libera:nick[away]")
    assert not glob_match("irc:libera:nick[away]", "irc:libera:nicka")
    assert glob_match("irc:libera:a?c", "irc:libera:abc")
    assert not glob_match("irc:libera:alice", "irc:libera:alice2")


def test_permissions() -> None:
    perms = Permissions(
        admins=["irc:libera:account:root", "matrix:@boss:example.org"],
        groups={"ops": ["irc:libera:*!*@staff/*", "group:helpers"], "helpers": ["irc:*:carol"]},
        rules={
            "deploy": Rule(allow=("group:ops", "room:irc/libera/#deploy")),
            "echo": Rule(deny=("network:irc/oftc", "irc:libera:spammer")),
            "*": Rule(deny=("room:irc/libera/#silent",)),
        },
        ignore=["irc:libera:troll!*@*"],
    )
    root = msg(user="x", account="root")
    staff = msg(user="bob", host="~bob@staff/bob")
    carol = msg(user="carol")
    plain = msg(user="dave", host="~dave@home.example")
    boss = msg(platform="matrix", network="main", user="@boss:example.org")

    assert perms.is_admin(root)
    assert perms.is_admin(boss)
    assert not perms.is_admin(staff)
    assert perms.ignored(msg(user="troll", host="t@x"))
    assert not perms.ignored(plain)
    assert perms.in_group("ops", staff)
    assert perms.in_group("ops", carol)
    assert perms.in_group("anything", root)  # admins are in every group
    assert not perms.in_group("ops", plain)
    assert not perms.in_group("nope", plain)

    # permission field: a group the user must be in
    assert perms.allowed("reboot", "ops", staff)
    assert not perms.allowed("reboot", "ops", plain)
    assert not perms.allowed("reboot", "admins", plain)  # no such group: admins only
    assert perms.allowed("reboot", "admins", root)
    # rules: allow lists and deny lists, "*" for everything
    assert perms.allowed("deploy", None, staff)
    assert perms.allowed("deploy", None, msg(user="dave", room="#deploy"))
    assert not perms.allowed("deploy", None, plain)
    assert not perms.allowed("echo", None, msg(user="spammer"))
    assert not perms.allowed("echo", None, msg(network="oftc"))
    assert perms.allowed("echo", None, plain)
    assert not perms.allowed("ping", None, msg(room="#silent"))
    assert perms.allowed("ping", None, msg(room="#silent", account="root"))  # admins pass


def test_groups_may_not_loop() -> None:
    perms = Permissions(groups={"a": ["group:b"], "b": ["group:a"]})
    assert not perms.in_group("a", msg())


def test_scope() -> None:
    m = msg(room="#ops")
    assert in_scope(CommandScope(), m)
    assert in_scope(CommandScope(platforms=["irc"], networks=["libera"], rooms=["#ops"]), m)
    assert in_scope(CommandScope(networks=["irc/libera"], rooms=["irc/libera/#o*"]), m)
    assert not in_scope(CommandScope(platforms=["matrix"]), m)
    assert not in_scope(CommandScope(rooms=["#dev"]), m)


# -- rate limits ------------------------------------------------------------------------------


def test_rate_limit_sliding_window() -> None:
    limiter = RateLimiter(clock=lambda: 0.0)
    two_per_10 = [("u", RateLimit(count=2, period=10))]
    assert limiter.reserve(two_per_10, now=0.0).ok
    assert limiter.reserve(two_per_10, now=1.0).ok
    refused = limiter.reserve(two_per_10, now=2.0)
    assert not refused.ok
    assert refused.delay == pytest.approx(8.0)
    assert refused.binding == 0
    assert not limiter.reserve(two_per_10, now=9.9).ok
    assert limiter.reserve(two_per_10, now=10.0).ok  # the first event left the window
    assert not limiter.reserve(two_per_10, now=10.5).ok
    assert limiter.reserve(two_per_10, now=11.0).ok
    assert limiter.reserve([("other", RateLimit(count=1, period=10))], now=11.0).ok


def test_rate_limit_all_or_nothing_and_queueing() -> None:
    limiter = RateLimiter()
    user = ("user", RateLimit(count=1, period=5))
    room = ("room", RateLimit(count=3, period=5))
    assert limiter.reserve([user, room], now=0.0).ok
    refused = limiter.reserve([user, room], now=1.0)
    assert not refused.ok
    assert refused.binding == 0
    # the refused one took no room slot: two more users fit in the room
    assert limiter.reserve([("user2", user[1]), room], now=1.0).ok
    assert limiter.reserve([("user3", user[1]), room], now=1.0).ok
    assert limiter.reserve([("user4", user[1]), room], now=1.0).binding == 1
    # queueing: a slot 4 s away is booked when up to 5 s of delay is fine
    queued = limiter.reserve([user], now=1.0, max_delay=5.0)
    assert queued.ok
    assert queued.delay == pytest.approx(4.0)
    # and the booked (future) slot counts: the next one is 5 s after it
    assert limiter.reserve([user], now=1.0, max_delay=5.0).delay == pytest.approx(9.0)


def test_notice_once_per_window() -> None:
    limiter = RateLimiter()
    assert limiter.notify_once("alice", 10, now=0.0)
    assert not limiter.notify_once("alice", 10, now=5.0)
    assert limiter.notify_once("bob", 10, now=5.0)
    assert limiter.notify_once("alice", 10, now=10.0)


def test_limiter_forgets_idle_keys() -> None:
    limiter = RateLimiter()
    for i in range(1023):
        limiter.reserve([(f"k{i}", RateLimit(count=1, period=1))], now=0.0)
    assert len(limiter) == 1023
    limiter.reserve([("last", RateLimit(count=1, period=1))], now=100.0)  # the 1024th call
    assert len(limiter) == 1


def test_booking_counts_the_right_limits_and_tells_once() -> None:
    m = msg("!deploy")
    per_user = RouterSettings(user_rate=RateLimit(count=1, period=10))
    limiter = RateLimiter(clock=lambda: 0.0)
    assert book(limiter, per_user, m, "u", None) == Booking(True)
    assert book(limiter, per_user, m, "u", None) == Booking(
        False, notice="slow down: at most 1 command per 10 s"
    )
    assert book(limiter, per_user, m, "u", None) == Booking(False)  # told once per window
    assert book(limiter, per_user, m, "v", None).ok  # per user

    # A command's own limit counts when the user may run it (the router passes reg then).
    deploy = reg("deploy", rate_limit={"count": 1, "period": 30})
    limiter = RateLimiter(clock=lambda: 0.0)
    assert book(limiter, RouterSettings(), m, "u", deploy).ok
    assert book(limiter, RouterSettings(), m, "u", deploy).notice == (
        "slow down: at most 1 `deploy` per 30 s"
    )
    assert book(limiter, RouterSettings(), m, "u", None) == Booking(True)  # no limits at all

    # Queue mode: a later slot within queue_max_delay is booked, beyond it refused.
    queued = RouterSettings(
        room_rate=RateLimit(count=1, period=3), rate_mode="queue", queue_max_delay=5.0
    )
    limiter = RateLimiter(clock=lambda: 0.0)
    assert book(limiter, queued, m, "u", None) == Booking(True)
    assert book(limiter, queued, m, "v", None) == Booking(True, delay=3.0)
    assert book(limiter, queued, m, "w", None) == Booking(
        False, notice="slow down: at most 1 command per 3 s in this room"
    )
