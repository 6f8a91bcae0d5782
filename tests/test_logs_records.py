"""Log records: an operator's lines become records (eeveepy.logs.records), records become
lines for people (eeveepy.logs.render)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eeveepy.logs.records import MAX_LINE_BYTES, level_from_name, record_from_line
from eeveepy.logs.render import render
from eeveepy.protocol.codec import EnvelopeEncoder
from eeveepy.protocol.models import LogLevel, LogRecord

pytest.register_assert_rewrite("tests.logs_fixtures")  # before its first import

from tests.logs_fixtures import env_of  # noqa: E402

# ---------------------------------------------------------------------------------------------
# record_from_line


def test_json_line_keeps_level_time_and_fields() -> None:
    line = json.dumps(
        {
            "event": "joined",
            "level": "warning",
            "timestamp": "2026-01-02T03:04:05.123456Z",
            "logger": "irc",
            "operator": "irc.libera",
            "room": "#x",
            "n": [1, {"a": None}],
        }
    )
    r = record_from_line("irc.libera", line, "stderr")
    assert r.operator == "irc.libera"
    assert r.level is LogLevel.WARNING
    assert r.event == "joined"
    assert r.time == datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert r.stream == "stderr"
    assert r.fields == {"logger": "irc", "room": "#x", "n": [1, {"a": None}]}


def test_json_line_claiming_another_operator_keeps_the_claim_in_fields() -> None:
    r = record_from_line("echo", '{"event": "x", "operator": "other"}', "stderr")
    assert r.operator == "echo"
    assert r.fields == {"operator": "other"}


@pytest.mark.parametrize(
    ("given_level", "expected"),
    [
        ("debug", LogLevel.DEBUG),
        ("info", LogLevel.INFO),
        ("warn", LogLevel.WARNING),
        ("WARNING", LogLevel.WARNING),
        ("exception", LogLevel.ERROR),
        ("error", LogLevel.ERROR),
        ("fatal", LogLevel.CRITICAL),
        ("critical", LogLevel.CRITICAL),
        ("notice", LogLevel.INFO),
        (42, LogLevel.INFO),
        (None, LogLevel.INFO),
    ],
)
def test_level_mapping(given_level: Any, expected: LogLevel) -> None:
    assert level_from_name(given_level) is expected
    r = record_from_line("x", json.dumps({"event": "e", "level": given_level}), "stdout")
    assert r.level is expected


def test_json_line_without_level_or_with_a_bad_timestamp() -> None:
    before = datetime.now(UTC)
    r = record_from_line("x", '{"event": "e", "timestamp": "yesterday"}', "stdout")
    assert r.level is LogLevel.INFO
    assert r.time is not None
    assert r.time >= before
    naive = record_from_line("x", '{"event": "e", "timestamp": "2026-01-02T03:04:05"}', "stdout")
    assert naive.time is not None
    assert naive.time != datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert "timestamp" not in r.fields


@pytest.mark.parametrize(
    "line",
    [
        "plain text",
        "{not json",
        '{"message": "no event key"}',
        '{"event": 42}',
        "[1, 2, 3]",
        '"event"',
    ],
)
@pytest.mark.parametrize(("stream", "level"), [("stdout", "info"), ("stderr", "warning")])
def test_other_lines_are_plain_events(line: str, stream: Any, level: str) -> None:
    r = record_from_line("echo", line, stream)
    assert r.event == line
    assert r.level.value == level
    assert r.stream == stream
    assert r.fields == {}


def test_plain_text_loses_control_characters_and_is_cut() -> None:
    r = record_from_line("echo", "a\tb\x1b[31mred\x00\x7f\x85end\r", "stdout")
    assert r.event == "a\tb[31mredend"
    long = record_from_line("echo", "é" * MAX_LINE_BYTES, "stdout")
    assert len(long.event.encode()) <= MAX_LINE_BYTES
    assert long.event == "é" * (MAX_LINE_BYTES // 2)


def test_json_with_lone_surrogates_and_deep_nesting_still_serializes() -> None:
    deep = "[" * 200 + "]" * 200
    line = f'{{"event": "bad \\ud800", "k\\udc00": "\\udfff", "deep": {deep}}}'
    r = record_from_line("x", line, "stderr")
    assert r.event.startswith("bad ")
    EnvelopeEncoder("supervisor").encode(r)  # does not raise


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(),
        st.text(alphabet=st.characters(max_codepoint=0x9F)),
        st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=8), st.integers(0, 9000)),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner),
            max_leaves=20,
        ).map(lambda v: json.dumps({"event": "e", "level": "warn", "v": v})),
        st.dictionaries(st.text(), st.text() | st.integers()).map(json.dumps),
    ),
    st.sampled_from(["stdout", "stderr"]),
)
def test_record_from_line_never_raises(line: str, stream: Any) -> None:
    r = record_from_line("op.x", line, stream)
    assert r.stream == stream
    assert r.operator == "op.x"
    EnvelopeEncoder("supervisor").encode(r)  # always publishable
    if r.fields == {} and not line.strip().startswith("{"):
        assert len(r.event.encode()) <= MAX_LINE_BYTES
        assert not any(ord(c) < 32 and c != "\t" for c in r.event)


# ---------------------------------------------------------------------------------------------
# render


def test_render() -> None:
    when = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    r = LogRecord(
        operator="irc.libera",
        level=LogLevel.WARNING,
        event="joined\x1b[2J",
        time=when,
        fields={"room": "#x", "text": "two words", "n": 3, "nested": {"a": [1]}, "nl": "a\nb"},
    )
    line = render(env_of(r), color=False)
    assert line == (
        '2026-05-06T07:08:09.123Z WARNING  irc.libera joined\\x1b[2J room=#x text="two words" n=3 '
        'nested={"a":[1]} nl="a\\nb"'
    )
    assert "\n" not in line
    colored = render(env_of(r), color=True)
    assert "\033[33mWARNING" in colored
    plus2 = render(env_of(r), color=False, tz=timezone(timedelta(hours=2)))
    assert plus2.startswith("2026-05-06T09:08:09.123+02:00 ")
