"""Pure delivery decisions: who is skipped, which link, which contact (or a bounce)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from notifier.errors import FailureLogStatus, PermanentDeliveryError
from notifier.pipeline.delivery import email_address, phone_number, preferences_url, skip_reason
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
    ("recipient", "expected"),
    [
        ({"phone": "+15551234567"}, "+15551234567"),
        ({"phone": "+1 555 123 4567"}, "+15551234567"),
        ({"phone": "+6831234"}, "+6831234"),  # Niue: 7 digits, the shortest in service
    ],
)
def test_phone_number_is_e164_without_spaces(recipient: dict[str, Any], expected: str) -> None:
    assert phone_number(recipient) == expected


@pytest.mark.parametrize(
    "recipient",
    [
        {},
        {"phone": None},
        {"phone": "555-1234"},
        {"phone": "+12345"},
        {"phone": "+1555123456789012"},
    ],
)
def test_no_usable_phone_is_a_bounce_without_a_provider(recipient: dict[str, Any]) -> None:
    with pytest.raises(PermanentDeliveryError, match=r"E\.164") as caught:
        phone_number(recipient)

    assert caught.value.code == "NO_CONTACT"
    assert caught.value.log_status is FailureLogStatus.BOUNCED and caught.value.bad_address


@pytest.mark.parametrize(
    ("recipient", "message"),
    [
        ({}, "no email address"),
        ({"email": None}, "no email address"),
        ({"email": ""}, "no email address"),
        ({"email": "ada"}, "not a valid email address"),
        ({"email": "a@b.com, victim@evil.com"}, "not a valid email address"),
    ],
)
def test_no_usable_email_is_a_bounce_without_a_provider(
    recipient: dict[str, Any], message: str
) -> None:
    with pytest.raises(PermanentDeliveryError, match=message) as caught:
        email_address(recipient)

    assert caught.value.code == "NO_CONTACT"
    assert caught.value.log_status is FailureLogStatus.BOUNCED


def test_email_address_is_returned_as_stored() -> None:
    assert email_address({"email": "ada@example.com"}) == "ada@example.com"


def test_a_permanent_error_is_logged_as_failed_unless_its_classifier_says_otherwise() -> None:
    error = PermanentDeliveryError("x", code="400")

    assert error.log_status is FailureLogStatus.FAILED and not error.bad_address
