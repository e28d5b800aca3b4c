"""The HTTP helpers every provider shares: retry hints, headers, status words, redaction, and
the one table of SDK loggers kept quiet."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from notifier.errors import PermanentDeliveryError, TransientDeliveryError
from notifier.log import QUIET_SDK_LOGGERS, quiet_sdk_loggers
from notifier.providers.http import header, redacted, retry_after_seconds, status_phrase


@pytest.mark.parametrize(
    ("headers", "now", "seconds"),
    [
        ({"Retry-After": "17"}, 0.0, 17.0),
        ({"retry-after": " 2.5 "}, 0.0, 2.5),
        ({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, 1792567650.0, 30.0),  # HTTP date
        ({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, 1792567700.0, 0.0),  # in the past
        ({"X-RateLimit-Reset": "230"}, 200.0, 30.0),  # epoch seconds
        ({"x-ratelimit-reset": "100"}, 200.0, 0.0),  # past: retry now
        ({"Retry-After": "soon", "X-RateLimit-Reset": "210"}, 200.0, 10.0),  # falls through
        ({"Retry-After": "-5"}, 0.0, 0.0),
        ({"X-RateLimit-Reset": "tomorrow"}, 0.0, None),
        ({"Content-Type": "application/json"}, 0.0, None),
        ({}, 0.0, None),
        (None, 0.0, None),
    ],
)
def test_retry_after_seconds(
    headers: dict[str, str] | None, now: float, seconds: float | None
) -> None:
    assert retry_after_seconds(headers, now=now) == seconds


def test_header_lookup_ignores_case() -> None:
    headers = {"X-Message-Id": "abc"}
    assert header(headers, "x-message-id") == "abc"
    assert header(headers, "X-Message-Id") == "abc"
    assert header(headers, "Other") is None and header(None, "X") is None


def test_status_phrase_names_known_statuses_only() -> None:
    assert status_phrase(503) == "Service Unavailable"
    assert status_phrase(599) == "(unknown status)"


def test_redacted_removes_an_echoed_secret_from_message_and_args() -> None:
    error = redacted(TransientDeliveryError("bad key s3cret in body", code="401"), "s3cret")

    assert str(error) == "bad key [redacted] in body" and error.args == (error.message,)
    assert isinstance(error, TransientDeliveryError) and error.code == "401"
    untouched = PermanentDeliveryError("no secret here")
    assert redacted(untouched, "s3cret") is untouched and str(untouched) == "no secret here"


@pytest.fixture
def sdk_levels() -> Iterator[None]:
    saved = {name: logging.getLogger(name).level for name in QUIET_SDK_LOGGERS}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("sdk_levels")
def test_quiet_sdk_loggers_keeps_a_level_set_on_purpose_unless_told_to_override() -> None:
    logging.getLogger("python_http_client").setLevel(logging.NOTSET)
    logging.getLogger("twilio").setLevel(logging.DEBUG)

    quiet_sdk_loggers()
    assert logging.getLogger("python_http_client").level == logging.INFO
    assert logging.getLogger("twilio").level == logging.DEBUG

    quiet_sdk_loggers(override=True)
    assert logging.getLogger("twilio").level == logging.WARNING
