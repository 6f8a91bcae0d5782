"""What the IRC connector sends: no CTCP from user text, one channel or nick per target.

Pure functions of operators/irc/safety.py, no sockets; tests/test_irc.py checks the same
against a real server.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from operators.irc.lines import format_line, parse_line
from operators.irc.safety import (
    channel_problem,
    defuse,
    key_problem,
    nick_problem,
    outgoing_lines,
    target_problem,
)

# Text rich in control characters of every kind (C0, DEL, C1), IRC formatting codes, control
# pictures, markdown markers, separators and multi-byte characters.
irc_text = st.text(
    alphabet=st.one_of(
        st.characters(max_codepoint=0x9F),
        st.sampled_from("\x01\x01\x00\r\n\u2401\u2407\u2421 ,:*_`#&!@$%0-"),
        st.characters(),
    ),
    max_size=300,
)


def test_defuse_shows_control_characters_and_keeps_formatting() -> None:
    assert defuse("\x01VERSION\x01") == "\u2401VERSION\u2401"  # ␁VERSION␁
    assert defuse("\x01ACTION waves\x01") == "\u2401ACTION waves\u2401"
    assert (
        defuse("bell\x07 esc\x1b[31m del\x7f nul\x00") == "bell\u2407 esc\u241b[31m del\u2421 nul"
    )
    kept = "\x02b\x02 \x0304,01c\x03 \x04FF0000h\x04 \x0f\x11\x16\x1d\x1e\x1f\ttab\r\n"
    assert defuse(kept) == kept
    assert defuse("plain ünï ☃ ␁") == "plain ünï ☃ ␁"


def test_outgoing_lines_examples() -> None:
    assert outgoing_lines("\x01VERSION\x01", 100) == ["\u2401VERSION\u2401"]
    assert outgoing_lines("**hi**\nthere", 100) == ["\x02hi\x02", "there"]
    assert outgoing_lines("waves", 100, action=True) == ["\x01ACTION waves\x01"]
    assert outgoing_lines("\x01ACTION x\x01", 100, action=True) == [
        "\x01ACTION \u2401ACTION x\u2401\x01"
    ]
    assert outgoing_lines("a\r\n\x00\nb", 100, action=True) == [
        "\x01ACTION a\x01",
        "\x01ACTION b\x01",
    ]
    assert outgoing_lines("", 100, action=True) == []
    assert outgoing_lines("abcdefgh", 4, action=True) == [
        "\x01ACTION abcd\x01",
        "\x01ACTION efgh\x01",
    ]


ACTION_LINE = re.compile("\x01ACTION [^\x01]*\x01")


@settings(max_examples=300)
@given(
    irc_text,
    st.integers(min_value=4, max_value=400),
    st.sampled_from(["PRIVMSG", "NOTICE"]),
    st.sampled_from(["#room", "alice"]),
    st.booleans(),
)
def test_no_line_built_from_text_holds_ctcp_unless_an_action(
    text: str, budget: int, command: str, target: str, action: bool
) -> None:
    for piece in outgoing_lines(text, budget, action=action):
        line = format_line(command, target, piece)
        assert not set(line) & {"\r", "\n", "\x00"}, line
        parsed = parse_line(line)
        assert parsed is not None
        assert parsed.params[:1] == [target]
        assert parsed.params[-1] == piece
        if action:
            assert ACTION_LINE.fullmatch(piece), piece  # the wrapper, and no \x01 inside
            assert len(piece.encode()) <= budget + 9
        else:
            assert "\x01" not in line, line
            assert len(piece.encode()) <= budget


@given(irc_text)
def test_defused_control_characters_stay_visible(text: str) -> None:
    joined = "".join(outgoing_lines(text, 400))
    assert joined.count("\u2401") == text.count("\x01") + text.count("\u2401")
    assert joined.count("\u2407") == text.count("\x07") + text.count("\u2407")


def test_channel_problems() -> None:
    for ok in ("#ops", "&local", "#ünï", "#a.b:c", "#" + "x" * 199):
        assert channel_problem(ok) is None, ok
    assert "every channel" in (channel_problem("0") or "")
    assert "comma" in (channel_problem("#a,#b") or "")
    assert "space" in (channel_problem("#a b") or "")
    assert "U+0007" in (channel_problem("#a\x07") or "")
    assert "U+0000" in (channel_problem("#a\x00") or "")
    assert "U+000D" in (channel_problem("#a\r\nJOIN #b") or "")
    assert "U+00A0" in (channel_problem("#a\u00a0b") or "")
    assert "channel prefix (# &)" in (channel_problem("ops") or "")
    assert channel_problem("+ops") is not None
    assert channel_problem("+ops", "#&+") is None
    assert "at most 200" in (channel_problem("#" + "x" * 200) or "")
    assert "at most 50" in (channel_problem("#" + "é" * 25, max_bytes=50) or "")
    assert channel_problem("") == "an empty channel"


def test_nick_and_target_problems() -> None:
    for ok in ("alice", "[bot]", "a-b_c|d^e`f{g}", "ünï", "x" * 64):
        assert nick_problem(ok) is None, ok
        assert target_problem(ok) is None, ok
    assert "digit" in (nick_problem("1abc") or "")
    assert "digit" in (nick_problem("-x") or "")
    assert "channel prefix" in (nick_problem("#ops") or "")
    for bad in ("a b", "a,b", "a!b", "a@server", "a%host", "*", "a?", "a:b", "$*", "a\x01"):
        assert nick_problem(bad) is not None, bad
        assert target_problem(bad) is not None, bad
    assert "at most 9" in (nick_problem("abcdefghij", max_bytes=9) or "")
    assert "every channel" in (target_problem("0") or "")
    assert "comma" in (target_problem("#a,#b") or "")
    assert target_problem("#ops") is None
    assert target_problem("@#ops") is not None  # STATUSMSG: not a plain target
    assert target_problem("+ops", "#&+") is None
    assert target_problem("") is not None


@given(irc_text)
def test_a_valid_target_is_exactly_one_parameter(target: str) -> None:
    if target_problem(target) is not None:
        return
    assert target != "0"
    assert not set(target) & {",", " ", "\r", "\n", "\x00", "\x01"}
    parsed = parse_line(format_line("PRIVMSG", target, "hi there"))
    assert parsed is not None
    assert parsed.params == [target, "hi there"]


def test_key_problems() -> None:
    assert key_problem("s3cret") is None
    assert key_problem("a,b") == "a channel key cannot contain a comma"
    assert "space" in (key_problem("a b") or "")
    assert key_problem("") is not None
