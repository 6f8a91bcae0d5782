"""IRC text translation, splitting, parsing and flood control (no sockets)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eeveepy.connector.flood import FairQueue, TokenBucket
from eeveepy.connector.reconnect import backoff_delay
from eeveepy.errors import ConnectorError, EeveeError, IrcTextError
from operators.irc.lines import format_line, parse_line, split_source
from operators.irc.settings import Channel, IrcSettings, network_name
from operators.irc.text import (
    irc_lower,
    markdown_to_irc,
    mentions,
    parse_ctcp_action,
    sanitize,
    split_message,
    strip_formatting,
    text_budget,
)

LINEBREAK = re.compile(r"\r\n|\r|\n")
# Text with lots of IRC control characters, line breaks and multi-byte characters.
irc_text = st.text(
    alphabet=st.one_of(
        st.sampled_from("\x00\x01\x02\x03\x04\x0f\x11\x16\x1d\x1e\x1f\r\n ,:*_`#0123456789"),
        st.characters(),
    ),
    max_size=300,
)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- formatting --------------------------------------------------------------------------------


def test_strip_formatting_examples() -> None:
    assert strip_formatting("\x02bold\x02 \x1ditalic\x1d \x1funder\x1f") == "bold italic under"
    assert strip_formatting("\x0304red\x03 \x034,12both\x03 \x0399,1x") == "red both x"
    assert strip_formatting("\x03,5 comma stays") == ",5 comma stays"
    assert strip_formatting("\x04FF0000hex\x04 \x0f\x16\x11\x1e") == "hex "
    assert strip_formatting("\x03123") == "3"  # at most two digits of colour
    assert strip_formatting("plain ünï ☃") == "plain ünï ☃"


@given(irc_text)
def test_strip_formatting_is_idempotent_and_complete(text: str) -> None:
    once = strip_formatting(text)
    assert strip_formatting(once) == once
    assert not set(once) & set("\x02\x03\x04\x0f\x11\x16\x1d\x1e\x1f")


def test_markdown_to_irc_examples() -> None:
    assert markdown_to_irc("**bold**") == "\x02bold\x02"
    assert markdown_to_irc("*it* and _it_") == "\x1dit\x1d and \x1dit\x1d"
    assert markdown_to_irc("`x = *y*`") == "\x11x = *y*\x11"
    assert markdown_to_irc("**a** `b` *c*") == "\x02a\x02 \x11b\x11 \x1dc\x1d"
    assert markdown_to_irc("snake_case_name stays") == "snake_case_name stays"
    assert markdown_to_irc("2 * 3 * 4") == "2 * 3 * 4"
    assert markdown_to_irc("a ** b") == "a ** b"
    assert markdown_to_irc("`unclosed") == "`unclosed"


@given(irc_text)
def test_markdown_is_only_formatting(text: str) -> None:
    # Converting adds formatting codes and removes markers only: the letters stay in order.
    out = markdown_to_irc(text)
    assert re.sub(r"[*_`]", "", strip_formatting(out)) == re.sub(
        r"[*_`]", "", strip_formatting(text)
    )


# -- sanitising and splitting ------------------------------------------------------------------


def test_sanitize() -> None:
    assert sanitize("a\r\nb\rc\nd\x00e") == "a b c de"
    assert sanitize("\ud800x") == "\ufffdx"


@given(irc_text)
def test_sanitize_never_leaves_line_breaks(text: str) -> None:
    out = sanitize(text)
    assert not set(out) & {"\r", "\n", "\x00"}
    out.encode("utf-8")  # always encodable


def test_split_message_examples() -> None:
    assert split_message("hello world\n\nsecond", 8) == ["hello ", "world", "second"]
    assert split_message("", 10) == []
    assert split_message("\r\n\n\r", 10) == []
    assert split_message("abcdefghij", 4) == ["abcd", "efgh", "ij"]
    assert split_message("ééééé", 5) == ["éé", "éé", "é"]  # never half a character
    assert split_message("😀😀", 5) == ["😀", "😀"]
    assert split_message("a\x00b", 10) == ["ab"]
    with pytest.raises(IrcTextError):
        split_message("x", 3)
    assert issubclass(IrcTextError, EeveeError)


@settings(max_examples=300)
@given(irc_text, st.integers(min_value=4, max_value=80))
def test_split_message_properties(text: str, max_bytes: int) -> None:
    pieces = split_message(text, max_bytes)
    for piece in pieces:
        data = piece.encode("utf-8")  # never a broken character
        assert 0 < len(data) <= max_bytes
        assert not set(piece) & {"\r", "\n", "\x00"}
    expected = re.sub("[\ud800-\udfff]", "\ufffd", text.replace("\x00", ""))
    lines = [ln for ln in LINEBREAK.split(expected) if ln]
    # Pieces come line by line and each line's pieces join back to the line exactly.
    rebuilt: list[str] = []
    remaining = list(pieces)
    for line in lines:
        acc = ""
        while acc != line:
            assert remaining, (line, acc)
            acc += remaining.pop(0)
            assert line.startswith(acc)
        rebuilt.append(acc)
    assert rebuilt == lines
    assert remaining == []


def test_split_prefers_spaces() -> None:
    text = "word " * 30
    pieces = split_message(text, 52)
    assert all(p.endswith(" ") for p in pieces)
    assert "".join(pieces) == text


def test_text_budget_counts_the_full_prefix() -> None:
    budget = text_budget("PRIVMSG", "#chan", "eevee", "bot@host.example")
    line = f":eevee!bot@host.example PRIVMSG #chan :{'x' * budget}\r\n"
    assert len(line.encode()) == 512
    unknown = text_budget("PRIVMSG", "#chan", "eevee")
    assert unknown < budget  # conservative without user@host
    assert text_budget("PRIVMSG", "#" + "c" * 600, "eevee") == 4


# -- protocol lines ----------------------------------------------------------------------------


def test_parse_line_examples() -> None:
    line = parse_line("@account=alice;msgid=a\\sb;+x :alice!al@host PRIVMSG #chan :hi :) there\r\n")
    assert line is not None
    assert line.command == "PRIVMSG"
    assert line.params == ["#chan", "hi :) there"]
    assert line.source == "alice!al@host"
    assert line.nick == "alice"
    assert line.tags == {"account": "alice", "msgid": "a b", "+x": ""}
    ping = parse_line("PING :irc.test")
    assert ping is not None
    assert (ping.command, ping.params, ping.source) == ("PING", ["irc.test"], None)
    num = parse_line(":srv 005 me CHANTYPES=# PREFIX=(ov)@+ :are supported")
    assert num is not None
    assert num.params == ["me", "CHANTYPES=#", "PREFIX=(ov)@+", "are supported"]
    assert num.param(9, "d") == "d"
    assert parse_line("") is None
    assert parse_line(":only.a.source") is None
    assert parse_line("@tags") is None


@settings(max_examples=500)
@given(irc_text)
def test_inbound_fuzz_never_raises(text: str) -> None:
    line = parse_line(text)
    if line is not None:
        assert line.command
        _ = line.nick
    strip_formatting(text)
    markdown_to_irc(text)
    parse_ctcp_action(text)
    mentions(text, "eevee")
    mentions(text, text[:5])
    split_source(text)
    irc_lower(text)


def test_format_line() -> None:
    assert format_line("PRIVMSG", "#chan", "hello there") == "PRIVMSG #chan :hello there"
    assert format_line("PRIVMSG", "#chan", "one") == "PRIVMSG #chan one"
    assert format_line("PRIVMSG", "#chan", ":)") == "PRIVMSG #chan ::)"
    assert format_line("PRIVMSG", "#chan", "") == "PRIVMSG #chan :"
    assert format_line("QUIT") == "QUIT"
    injected = format_line("PRIVMSG", "#a\r\nQUIT", "x\r\nQUIT :bye\x00")
    assert "\r" not in injected
    assert "\n" not in injected
    assert "\x00" not in injected
    assert injected == "PRIVMSG #aQUIT :x QUIT :bye"
    with pytest.raises(IrcTextError):
        format_line("PRIVMSG x\r\nQUIT", "y")


@given(st.lists(irc_text, max_size=4), irc_text)
def test_format_line_is_one_command_with_the_same_params(middle: list[str], last: str) -> None:
    out = format_line("PRIVMSG", *middle, last)
    assert not set(out) & {"\r", "\n", "\x00"}
    parsed = parse_line(out)
    assert parsed is not None
    assert parsed.command == "PRIVMSG"
    assert parsed.params[-1] == sanitize(last)


def test_split_source() -> None:
    assert split_source("nick!user@host") == ("nick", "user@host")
    assert split_source("irc.server.org") == ("irc.server.org", None)
    assert split_source(None) == ("", None)


def test_irc_lower() -> None:
    assert irc_lower("Eevee[Bot]~") == "eevee{bot}^"
    assert irc_lower("A[]", "ascii") == "a[]"


# -- classification ----------------------------------------------------------------------------


def test_parse_ctcp_action() -> None:
    assert parse_ctcp_action("\x01ACTION waves\x01") == "waves"
    assert parse_ctcp_action("\x01ACTION waves") == "waves"
    assert parse_ctcp_action("\x01ACTION\x01") == ""
    assert parse_ctcp_action("\x01VERSION\x01") is None
    assert parse_ctcp_action("\x01ACTIONS\x01") is None
    assert parse_ctcp_action("ACTION waves") is None


def test_mentions() -> None:
    assert mentions("eevee: hi", "eevee")
    assert mentions("hi @Eevee!", "eevee")
    assert mentions("hi \x02eevee\x02", "eevee")
    assert not mentions("eeveebot hi", "eevee")
    assert not mentions("eevee_ hi", "eevee")
    assert mentions("ping [bot]", "[BOT]")
    assert not mentions("anything", "")


# -- flood control -----------------------------------------------------------------------------


def test_token_bucket_rate_and_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4, 2.0, 5, clock=clock)
    assert [bucket.try_take() for _ in range(6)] == [True] * 5 + [False]
    assert bucket.delay() == pytest.approx(0.5)  # 4 per 2 s: one every 0.5 s
    clock.now += 0.5
    assert bucket.try_take()
    assert not bucket.try_take()
    clock.now += 100  # refills up to the burst only
    assert bucket.tokens == pytest.approx(5)
    # Over a long run the rate is respected: 4 lines per 2 s after the burst.
    sent = 0
    for _ in range(1000):  # 10 s in 10 ms steps
        clock.now += 0.01
        while bucket.try_take():
            sent += 1
    assert sent == pytest.approx(5 + 20, abs=1)


def test_token_bucket_disabled_and_invalid() -> None:
    bucket = TokenBucket(0, 2.0, 5, clock=FakeClock())
    assert not bucket.enabled
    assert all(bucket.try_take() for _ in range(1000))
    assert bucket.delay() == 0
    with pytest.raises(ConnectorError):
        TokenBucket(1, 0, 1)
    with pytest.raises(ConnectorError):
        TokenBucket(1, 1, 0)


def test_fair_queue_round_robin_keeps_order() -> None:
    q: FairQueue[int] = FairQueue(irc_lower)
    for i in range(5):
        q.put("#busy", i)
    q.put("#quiet", 100)
    q.put("#BUSY", 5)  # same target, server casemapping
    q.put("alice", 200)
    order = []
    while (item := q.get()) is not None:
        order.append(item)
    assert [i for _, i in order][:3] == [0, 100, 200]  # one busy line, then the others
    assert [i for t, i in order if irc_lower(t) == "#busy"] == [0, 1, 2, 3, 4, 5]
    assert len(q) == 0
    assert not q


def test_fair_queue_put_front_and_drop() -> None:
    q: FairQueue[str] = FairQueue()
    q.put("a", "a1")
    q.put("b", "b1")
    target, item = q.get() or ("", "")
    q.put_front(target, item)
    assert q.get() == ("a", "a1")
    q.put("b", "b2")
    assert q.drop_oldest() == ("b", "b1")
    assert q.targets == ["b"]
    q.clear()
    assert q.get() is None
    assert q.drop_oldest() is None


@given(st.lists(st.tuples(st.sampled_from(["#a", "#b", "#c", "d"]), st.integers())))
def test_fair_queue_properties(items: list[tuple[str, int]]) -> None:
    q: FairQueue[int] = FairQueue()
    for target, value in items:
        q.put(target, value)
    assert len(q) == len(items)
    out = []
    while (got := q.get()) is not None:
        out.append(got)
    # Per-target FIFO order.
    for target in {t for t, _ in items}:
        assert [v for t, v in out if t == target] == [v for t, v in items if t == target]
    # Fairness: in any prefix, no target is ahead of another that still had lines by > 1.
    counts: dict[str, int] = {}
    totals = {t: sum(1 for x, _ in items if x == t) for t in {t for t, _ in items}}
    for target, _ in out:
        counts[target] = counts.get(target, 0) + 1
        for other, total in totals.items():
            if counts.get(other, 0) < total:
                assert counts[target] <= counts.get(other, 0) + 1


# -- settings helpers (pure) -------------------------------------------------------------------


def test_settings_channels_and_network() -> None:
    s = IrcSettings.model_validate(
        {"host": "irc.example.org", "channels": ["#a", {"name": "#b", "key": "k"}]}
    )
    assert s.channels == [Channel(name="#a"), Channel(name="#b", key="k")]
    assert network_name(s, "irc.libera") == "libera"
    assert network_name(s, "irc") == "irc.example.org"
    assert network_name(s.model_copy(update={"network": "x"}), "irc.libera") == "x"
    assert s.sasl is None
    plain = IrcSettings(host="h", sasl_username="u", sasl_password="p")
    assert plain.sasl == "PLAIN"
    with pytest.raises(ValueError, match="extra"):
        IrcSettings.model_validate({"host": "h", "bogus": 1})
    with pytest.raises(ValueError, match="EXTERNAL"):
        IrcSettings(host="h", sasl_mechanism="EXTERNAL")


def test_settings_refuse_channels_that_are_not_one_channel() -> None:
    ok = IrcSettings.model_validate({"host": "h", "channels": ["#a", "&b", "+c", "!d"]})
    assert [c.name for c in ok.channels] == ["#a", "&b", "+c", "!d"]
    for bad, why in [
        ("0", "JOIN 0 would leave every channel"),
        ("#a,#b", "comma"),
        ("#a b", "space"),
        ("ops", "channel prefix"),
        ("#a\x07", "control character"),
        ("#" + "x" * 200, "at most 200"),
    ]:
        with pytest.raises(ValueError, match="not a valid IRC channel") as info:
            IrcSettings.model_validate({"host": "h", "channels": ["#fine", bad]})
        assert why in str(info.value), str(info.value)
        assert "channels.1" in str(info.value)
    with pytest.raises(ValueError, match="a channel key cannot contain a comma"):
        IrcSettings.model_validate({"host": "h", "channels": [{"name": "#a", "key": "s3c,r"}]})


def test_backoff_delay_bounds() -> None:
    for attempt in range(40):
        for r in (0.0, 0.5, 1.0):
            d = backoff_delay(attempt, 1.0, 60.0, lambda r=r: r)
            assert 1.0 <= d <= 60.0
    assert backoff_delay(10, 1.0, 60.0, lambda: 1.0) == 60.0
    assert backoff_delay(0, 1.0, 60.0, lambda: 1.0) == 1.0
