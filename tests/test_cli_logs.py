"""``eevee logs`` arguments: ``--since`` (eeveepy.cli.logs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from eeveepy.cli.logs import parse_since
from eeveepy.errors import LogQueryError

NOW = datetime(2026, 5, 6, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", NOW - timedelta(seconds=30)),
        ("10m", NOW - timedelta(minutes=10)),
        ("1h", NOW - timedelta(hours=1)),
        ("2d", NOW - timedelta(days=2)),
        ("1w", NOW - timedelta(weeks=1)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("2026-05-06T10:00:00Z", datetime(2026, 5, 6, 10, tzinfo=UTC)),
        ("2026-05-06T10:00:00", datetime(2026, 5, 6, 10, tzinfo=UTC)),
        ("2026-05-06T12:00:00+02:00", datetime(2026, 5, 6, 10, tzinfo=UTC)),
        ("2026-05-06", datetime(2026, 5, 6, tzinfo=UTC)),
    ],
)
def test_parse_since(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "10", "ten minutes", "5y", "-1h", "99999999999999d"])
def test_parse_since_rejects(text: str) -> None:
    with pytest.raises(LogQueryError):
        parse_since(text, NOW)
