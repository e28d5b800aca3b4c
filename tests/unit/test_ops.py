"""The operator's argument parsing: --since, --reason-like, job ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from notifier.operations.ops import parse_since, reason_pattern, valid_job_id

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "ago"),
    [("24h", timedelta(hours=24)), ("30m", timedelta(minutes=30)), ("7d", timedelta(days=7)),
     ("2w", timedelta(weeks=2)), ("90s", timedelta(seconds=90)), ("1.5h", timedelta(minutes=90))],
)  # fmt: skip
def test_since_as_a_duration_ago(text: str, ago: timedelta) -> None:
    assert parse_since(text, NOW) == NOW - ago


def test_since_as_an_iso_time_is_utc_unless_it_says_otherwise() -> None:
    assert parse_since("2026-11-24T09:00") == datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    assert parse_since("2026-11-24T09:00+01:00").utcoffset() == timedelta(hours=1)


def test_since_rejects_anything_else_with_examples() -> None:
    with pytest.raises(ValueError, match=r"expected a duration like 24h.*got 'yesterday'"):
        parse_since("yesterday")


def test_reason_like_is_a_substring_unless_it_has_a_wildcard() -> None:
    assert reason_pattern("timed out") == "%timed out%"
    assert reason_pattern("503%") == "503%"


def test_job_ids_are_uuids() -> None:
    assert valid_job_id(" 3F0C2A4E-8D1B-4C59-9A4E-2B8F6D1E7C10 ") == (
        "3f0c2a4e-8d1b-4c59-9a4e-2b8f6d1e7c10"
    )
    with pytest.raises(ValueError, match="'abc' is not a job id"):
        valid_job_id("abc")
