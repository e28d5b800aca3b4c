"""Pure delivery decisions: who is skipped, which link, which log status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from notifier.errors import PermanentDeliveryError
from notifier.pipeline.delivery import log_status_for, preferences_url, skip_reason
from notifier.store import JobContext

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def job(
    method: str = "email",
    recipient: dict[str, Any] | None = None,
    preferences: dict[str, Any] | None = None,
) -> JobContext:
    return JobContext(
        job_id="j",
        lease_token="t",
        recipient_id="r",
        group_id=None,
        notification_type="immediate",
        urgency_level="normal",
        delivery_method=method,
        content={"body": "b"},
        metadata={},
        retry_count=0,
        max_retries=3,
        scheduled_for=None,
        recipient=recipient or {"is_active": True, "email": "a@example.com"},
        group_name=None,
        preferences=preferences,
    )


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({}, None),
        ({"recipient": {"is_active": False}}, "recipient is inactive"),
        ({"preferences": {"is_muted": True, "muted_until": None}}, "recipient is muted"),
        (
            {
                "preferences": {
                    "is_muted": True,
                    "muted_until": (NOW + timedelta(hours=1)).isoformat(),
                }
            },
            "recipient is muted until",
        ),
        (
            {
                "preferences": {
                    "is_muted": True,
                    "muted_until": (NOW - timedelta(hours=1)).isoformat(),
                }
            },
            None,
        ),
        (
            {"preferences": {"is_muted": False, "effective_channels": ["sms"]}},
            "recipient does not accept email",
        ),
        ({"preferences": {"is_muted": False, "effective_channels": ["email", "sms"]}}, None),
        ({"preferences": {"is_muted": False, "effective_channels": None}}, None),
    ],
)
def test_skip_reason(kwargs: dict[str, Any], reason: str | None) -> None:
    found = skip_reason(job(**kwargs), NOW)
    if reason is None:
        assert found is None
    else:
        assert found is not None and found.startswith(reason)


def test_preferences_url_replaces_or_appends_the_token() -> None:
    assert (
        preferences_url("https://a.example/p/{token}/edit", "t1") == "https://a.example/p/t1/edit"
    )
    assert preferences_url("https://a.example/p/", "t1") == "https://a.example/p/t1"
    assert preferences_url(None, "t1") is None
    assert preferences_url("https://a.example/p/", None) is None


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("21610", "blocked"),
        ("21211", "bounced"),
        ("NO_CONTACT", "bounced"),
        ("400", "failed"),
        (None, "failed"),
    ],
)
def test_log_status_for_permanent_errors(code: str | None, status: str) -> None:
    assert log_status_for(PermanentDeliveryError("x", code=code)) == status
