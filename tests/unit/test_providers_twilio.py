"""TwilioProvider against the spec-checking loopback server, through the real SDK."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from notifier.errors import (
    FailureLogStatus,
    PermanentDeliveryError,
    TransientDeliveryError,
    UnknownOutcomeError,
)
from notifier.providers.base import EmailMessage, TextMessage
from notifier.providers.twilio import (
    TwilioProvider,
    channel_address,
    classify_twilio_error,
    with_job_id,
)
from tests.support.loopback import TwilioLoopback, twilio_error, unused_base_url

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "loopback-auth-token-5f1e"
SERVICE_SID = "MG" + "fedcba9876543210" * 2
FROM = "+15557654321"


def sms(
    to: str = "+15551234567", body: str = "Your code is 1234", job_id: str = "job-9"
) -> TextMessage:
    return TextMessage(job_id=job_id, to=to, body=body)


@pytest.fixture
def server() -> Iterator[TwilioLoopback]:
    with TwilioLoopback() as loopback:
        yield loopback


def make_provider(base_url: str, **options: object) -> TwilioProvider:
    settings: dict[str, object] = {"from_number": FROM, "base_url": base_url, "timeout": 2.0}
    settings.update(options)
    return TwilioProvider(ACCOUNT_SID, AUTH_TOKEN, **settings)  # type: ignore[arg-type]


@pytest.fixture
def provider(server: TwilioLoopback) -> TwilioProvider:
    return make_provider(server.base_url)


def test_sms_returns_receipt_with_the_message_sid(
    server: TwilioLoopback, provider: TwilioProvider
) -> None:
    receipt = provider.send(sms())

    assert receipt.provider == "twilio"
    assert receipt.message_id is not None and re.fullmatch(r"SM[0-9a-f]{32}", receipt.message_id)
    assert receipt.response == {"status": "queued", "channel": "sms"}
    assert server.spec_violations == []
    request = server.requests[0]
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request.body == {"To": "+15551234567", "From": FROM, "Body": "Your code is 1234"}


def test_whatsapp_to_and_from_are_prefixed_exactly_once(
    server: TwilioLoopback, provider: TwilioProvider
) -> None:
    provider.send(TextMessage(job_id="w1", to="+15551234567", body="hi", channel="whatsapp"))
    provider.send(
        TextMessage(job_id="w2", to="whatsapp:+15551234567", body="hi", channel="whatsapp")
    )

    assert server.spec_violations == []
    for request in server.requests:
        assert request.body["To"] == "whatsapp:+15551234567"
        assert request.body["From"] == f"whatsapp:{FROM}"


def test_status_callback_carries_the_job_id_and_keeps_its_query(server: TwilioLoopback) -> None:
    provider = make_provider(
        server.base_url, status_callback_url="https://hooks.example.com/twilio?tenant=acme"
    )

    provider.send(sms(job_id="job-77"))

    assert server.spec_violations == []
    callback = urlsplit(server.requests[0].body["StatusCallback"])
    assert callback.netloc == "hooks.example.com"
    assert parse_qs(callback.query) == {"tenant": ["acme"], "job_id": ["job-77"]}


def test_messaging_service_is_used_when_there_is_no_from_number(server: TwilioLoopback) -> None:
    provider = make_provider(server.base_url, from_number=None, messaging_service_sid=SERVICE_SID)

    provider.send(sms())

    assert server.spec_violations == []
    assert server.requests[0].body["MessagingServiceSid"] == SERVICE_SID
    assert "From" not in server.requests[0].body


def test_a_body_over_1600_characters_is_permanent_and_not_sent(
    server: TwilioLoopback, provider: TwilioProvider
) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        provider.send(sms(body="x" * 1601))

    assert "1,601 characters" in str(caught.value) and "1,600" in str(caught.value)
    assert server.requests == []


def test_a_body_of_exactly_1600_characters_is_sent(
    server: TwilioLoopback, provider: TwilioProvider
) -> None:
    provider.send(sms(body="x" * 1600))

    assert len(server.requests[0].body["Body"]) == 1600


@pytest.mark.parametrize("to", ["555-1234", "+12345", "whatsapp:+12345"])
def test_a_number_not_in_e164_is_a_bounce_and_not_sent(
    server: TwilioLoopback, provider: TwilioProvider, to: str
) -> None:
    # "+12345" passed Twilio's own check before it shared delivery's rule (7 to 15 digits).
    with pytest.raises(PermanentDeliveryError, match=r"E\.164") as caught:
        provider.send(sms(to=to))

    assert caught.value.log_status is FailureLogStatus.BOUNCED
    assert server.requests == []


def test_429_is_transient_and_honours_retry_after(
    server: TwilioLoopback, provider: TwilioProvider
) -> None:
    server.respond_with(429, twilio_error(20429, "Too Many Requests", 429), {"Retry-After": "5"})

    with pytest.raises(TransientDeliveryError) as caught:
        provider.send(sms())

    assert caught.value.code == "20429"
    assert caught.value.retry_after == 5
    assert str(caught.value) == "Twilio is rate limiting requests: 20429 too many requests"


def test_503_without_a_body_is_transient(server: TwilioLoopback, provider: TwilioProvider) -> None:
    server.respond_with(503, "upstream down")

    with pytest.raises(TransientDeliveryError) as caught:
        provider.send(sms())

    assert caught.value.code == "503"
    assert caught.value.retry_after is None
    assert str(caught.value) == "Twilio answered 503 Service Unavailable"


def test_invalid_number_is_permanent_with_a_readable_reason(
    server: TwilioLoopback, provider: TwilioProvider
) -> None:
    server.respond_with(
        400, twilio_error(21211, "The 'To' number +15551234567 is not a valid phone number.")
    )

    with pytest.raises(PermanentDeliveryError) as caught:
        provider.send(sms())

    assert caught.value.code == "21211"
    assert str(caught.value) == "Twilio rejected the number: 21211 invalid 'To' phone number"


def test_an_unknown_4xx_code_is_permanent_and_keeps_twilio_words(
    server: TwilioLoopback, provider: TwilioProvider
) -> None:
    server.respond_with(400, twilio_error(21602, "Message body is required."))

    with pytest.raises(PermanentDeliveryError) as caught:
        provider.send(sms())

    assert (
        str(caught.value)
        == "Twilio rejected the message (400 Bad Request): 21602 Message body is required."
    )


def test_an_rfc9457_problem_answer_is_classified_too(
    server: TwilioLoopback, provider: TwilioProvider
) -> None:
    # SDK 9.13 raises TwilioServiceException (not a TwilioRestException) for problem+json bodies.
    problem = {
        "type": "https://www.twilio.com/docs/errors/21610",
        "title": "Unsubscribed recipient",
        "status": 400,
        "code": 21610,
    }
    server.respond_with(400, problem)

    with pytest.raises(PermanentDeliveryError) as caught:
        provider.send(sms())

    assert caught.value.code == "21610"


def test_connection_refused_is_transient() -> None:
    provider = make_provider(unused_base_url())

    with pytest.raises(
        TransientDeliveryError,
        match=r"Could not reach Twilio at 127\.0\.0\.1:\d+: the connection failed \(Connection",
    ):
        provider.send(sms())


def test_read_timeout_is_an_unknown_outcome(server: TwilioLoopback) -> None:
    provider = make_provider(server.base_url, timeout=0.1)
    server.respond_with(201, delay_seconds=0.4)

    with pytest.raises(UnknownOutcomeError, match=r"after sending \(ReadTimeout\)"):
        provider.send(sms())


def test_the_auth_token_never_appears_in_errors_or_receipts(
    server: TwilioLoopback, provider: TwilioProvider
) -> None:
    receipt = provider.send(sms())
    server.respond_with(401, twilio_error(20003, f"Authenticate with {AUTH_TOKEN}", 401))

    with pytest.raises(PermanentDeliveryError) as caught:
        provider.send(sms())

    assert AUTH_TOKEN not in repr(receipt)
    assert AUTH_TOKEN not in str(caught.value) and AUTH_TOKEN not in repr(caught.value.args)
    assert "TWILIO_AUTH_TOKEN" in str(caught.value)


def test_twilio_region_in_the_environment_does_not_redirect_requests(
    server: TwilioLoopback, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    monkeypatch.setenv("TWILIO_EDGE", "dublin")

    make_provider(server.base_url).send(sms())

    assert len(server.requests) == 1


def test_an_email_is_refused_without_a_request(
    server: TwilioLoopback, provider: TwilioProvider
) -> None:
    message = EmailMessage(
        job_id="e1", to="ada@example.com", subject="s", html="<p>h</p>", text="h"
    )

    with pytest.raises(PermanentDeliveryError, match="only sends SMS and WhatsApp"):
        provider.send(message)

    assert server.requests == []


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, 20429),
        (429, None),
        (500, None),
        (503, 503),
        (400, 30003),
        (400, 30008),
        (400, 30001),
        (400, 30036),
    ],
)
def test_rate_limits_server_errors_and_carrier_hiccups_are_transient(
    status: int, code: int | None
) -> None:
    assert isinstance(classify_twilio_error(status, code), TransientDeliveryError)


@pytest.mark.parametrize(
    ("code", "log_status"),
    [
        (21211, FailureLogStatus.BOUNCED),
        (21610, FailureLogStatus.BLOCKED),
        (21614, FailureLogStatus.BOUNCED),
        (21635, FailureLogStatus.BOUNCED),
        (30005, FailureLogStatus.BOUNCED),
        (30006, FailureLogStatus.BOUNCED),
        (30007, FailureLogStatus.FAILED),
        (21999, FailureLogStatus.FAILED),
    ],
)
def test_bad_numbers_bounce_opt_outs_are_blocked_and_other_4xx_fail(
    code: int, log_status: FailureLogStatus
) -> None:
    error = classify_twilio_error(400, code, "whatever Twilio said")

    assert isinstance(error, PermanentDeliveryError)
    assert error.code == str(code)
    assert str(code) in str(error)
    assert error.log_status is log_status
    assert error.bad_address is (log_status is FailureLogStatus.BOUNCED)


def test_an_http_error_without_a_twilio_code_is_logged_as_failed() -> None:
    error = classify_twilio_error(401, None, "Authenticate")

    assert isinstance(error, PermanentDeliveryError)
    assert error.log_status is FailureLogStatus.FAILED


def test_whatsapp_prefix_is_stripped_for_sms() -> None:
    assert channel_address("whatsapp:+15551234567", "sms") == "+15551234567"
    assert channel_address(" +15551234567 ", "whatsapp") == "whatsapp:+15551234567"


def test_with_job_id_replaces_an_existing_job_id() -> None:
    assert (
        with_job_id("https://h.example/cb?job_id=old&a=1", "new")
        == "https://h.example/cb?a=1&job_id=new"
    )


def test_info_logging_stays_quiet_per_request(
    server: TwilioLoopback, caplog: pytest.LogCaptureFixture
) -> None:
    # The SDK logs ~10 lines per request at INFO; worker logs keep one event per line.
    caplog.set_level(logging.INFO)

    make_provider(server.base_url).send(sms())

    assert [r for r in caplog.records if r.name.startswith("twilio")] == []
