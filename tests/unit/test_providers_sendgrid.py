"""SendGridProvider against the spec-checking loopback server, through the real SDK."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from notifier.errors import PermanentDeliveryError, TransientDeliveryError, UnknownOutcomeError
from notifier.providers.base import EmailMessage, TextMessage
from notifier.providers.sendgrid import SendGridProvider, classify_http_error, first_error_message
from tests.support.loopback import SendGridLoopback, sendgrid_error, unused_base_url

API_KEY = "SG.loopbackkey.loopbacksecret"
UNSUBSCRIBE = "<https://example.com/unsubscribe/u1>, <mailto:unsubscribe@example.com>"


def email(job_id: str = "job-42", to: str = "ada@example.com") -> EmailMessage:
    return EmailMessage(
        job_id=job_id,
        to=to,
        to_name="Ada Lovelace",
        subject="Your weekly digest",
        html="<p>Hello <b>Ada</b></p>",
        text="Hello Ada",
        headers={
            "List-Unsubscribe": UNSUBSCRIBE,
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )


@pytest.fixture
def server() -> Iterator[SendGridLoopback]:
    with SendGridLoopback() as loopback:
        yield loopback


@pytest.fixture
def provider(server: SendGridLoopback) -> SendGridProvider:
    return SendGridProvider(
        API_KEY, "notify@example.com", from_name="Notifier", base_url=server.base_url, timeout=2
    )


def test_accepted_email_returns_receipt_with_x_message_id(
    server: SendGridLoopback, provider: SendGridProvider
) -> None:
    receipt = provider.send(email())

    assert receipt.provider == "sendgrid"
    assert receipt.message_id
    assert receipt.response == {"status": 202, "sandbox": False}
    assert server.spec_violations == []
    assert server.requests[0].header("Authorization") == f"Bearer {API_KEY}"


def test_request_carries_job_id_headers_and_both_parts(
    server: SendGridLoopback, provider: SendGridProvider
) -> None:
    provider.send(email(job_id="job-42"))

    body = server.requests[0].body
    assert server.spec_violations == []
    assert body["personalizations"] == [
        {
            "to": [{"email": "ada@example.com", "name": "Ada Lovelace"}],
            "custom_args": {"job_id": "job-42"},
        }
    ]
    assert "custom_args" not in body  # the spec types the top-level one as a string
    assert body["headers"]["List-Unsubscribe"] == UNSUBSCRIBE
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["from"] == {"email": "notify@example.com", "name": "Notifier"}
    assert "mail_settings" not in body


def test_sandbox_mode_asks_sendgrid_to_validate_without_sending(server: SendGridLoopback) -> None:
    provider = SendGridProvider(
        API_KEY, "notify@example.com", base_url=server.base_url, sandbox=True
    )

    receipt = provider.send(email())

    assert server.requests[0].body["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert receipt.response["sandbox"] is True
    assert server.spec_violations == []


def test_503_is_transient_and_honours_retry_after(
    server: SendGridLoopback, provider: SendGridProvider
) -> None:
    server.respond_with(503, headers={"Retry-After": "17"})

    with pytest.raises(TransientDeliveryError) as caught:
        provider.send(email())

    assert caught.value.code == "503"
    assert caught.value.retry_after == 17
    assert str(caught.value).startswith("SendGrid answered 503 Service Unavailable")


def test_429_is_transient_and_reads_the_rate_limit_reset_epoch(
    server: SendGridLoopback, provider: SendGridProvider
) -> None:
    server.respond_with(
        429, sendgrid_error("too many requests"), {"X-RateLimit-Reset": str(int(time.time()) + 30)}
    )

    with pytest.raises(TransientDeliveryError) as caught:
        provider.send(email())

    assert caught.value.code == "429"
    assert caught.value.retry_after is not None and 25 <= caught.value.retry_after <= 30


def test_retry_after_a_503_the_next_send_succeeds(
    server: SendGridLoopback, provider: SendGridProvider
) -> None:
    server.respond_with(503)

    with pytest.raises(TransientDeliveryError):
        provider.send(email())
    assert provider.send(email()).message_id
    assert len(server.requests) == 2


def test_400_is_permanent_with_sendgrid_message_and_code(
    server: SendGridLoopback, provider: SendGridProvider
) -> None:
    server.respond_with(
        400, sendgrid_error("The from address does not match a verified Sender Identity.", "from")
    )

    with pytest.raises(PermanentDeliveryError) as caught:
        provider.send(email())

    assert caught.value.code == "400"
    assert str(caught.value) == (
        "SendGrid rejected the email (400 Bad Request): "
        "from: The from address does not match a verified Sender Identity."
    )


def test_401_is_permanent_names_the_setting_and_hides_the_key(
    server: SendGridLoopback, provider: SendGridProvider
) -> None:
    # A body echoing the key must not leak it into the failure reason.
    server.respond_with(
        401, sendgrid_error(f"The provided authorization grant {API_KEY} is invalid")
    )

    with pytest.raises(PermanentDeliveryError) as caught:
        provider.send(email())

    assert "SENDGRID_API_KEY" in str(caught.value)
    assert API_KEY not in str(caught.value)
    assert "[redacted]" in str(caught.value)


def test_connection_refused_is_a_plain_transient_error() -> None:
    # Nothing was sent, so a blind retry is safe: not an unknown outcome.
    provider = SendGridProvider(
        API_KEY, "notify@example.com", base_url=unused_base_url(), timeout=2
    )

    with pytest.raises(TransientDeliveryError) as caught:
        provider.send(email())

    assert not isinstance(caught.value, UnknownOutcomeError)
    assert "Could not reach SendGrid at 127.0.0.1:" in str(caught.value)
    assert "refused" in str(caught.value).lower()


def test_read_timeout_is_an_unknown_outcome(server: SendGridLoopback) -> None:
    # The request was written before the answer timed out: SendGrid may have the email.
    provider = SendGridProvider(
        API_KEY, "notify@example.com", base_url=server.base_url, timeout=0.1
    )
    server.respond_with(202, delay_seconds=0.4)

    with pytest.raises(UnknownOutcomeError) as caught:
        provider.send(email())

    assert "timed out" in str(caught.value)
    assert "may or may not have accepted" in str(caught.value)


def test_connection_dropped_after_sending_is_an_unknown_outcome(
    server: SendGridLoopback, provider: SendGridProvider
) -> None:
    server.drop_connection()

    with pytest.raises(UnknownOutcomeError) as caught:
        provider.send(email())

    assert "may or may not have accepted" in str(caught.value)


def test_receipt_and_errors_never_contain_the_api_key(
    server: SendGridLoopback, provider: SendGridProvider
) -> None:
    receipt = provider.send(email())
    server.respond_with(400, sendgrid_error(API_KEY))

    with pytest.raises(PermanentDeliveryError) as caught:
        provider.send(email())

    assert API_KEY not in repr(receipt)
    assert API_KEY not in str(caught.value) and API_KEY not in repr(caught.value.args)


def test_a_text_message_is_refused_without_a_request(
    server: SendGridLoopback, provider: SendGridProvider
) -> None:
    with pytest.raises(PermanentDeliveryError, match="only sends email"):
        provider.send(TextMessage(job_id="j1", to="+15551234567", body="hi"))

    assert server.requests == []


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_rate_limit_and_server_errors_are_transient(status: int) -> None:
    assert isinstance(classify_http_error(status, None, None), TransientDeliveryError)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 406, 413, 451, 422])
def test_client_errors_are_permanent(status: int) -> None:
    error = classify_http_error(status, b'{"errors": [{"message": "nope"}]}', {})

    assert isinstance(error, PermanentDeliveryError)
    assert error.code == str(status)
    assert "nope" in str(error)


def test_a_non_json_error_body_is_kept_as_text() -> None:
    assert first_error_message(b"upstream overloaded\n") == "upstream overloaded"
    assert first_error_message(b"") is None


def test_debug_logging_does_not_leak_the_api_key(
    server: SendGridLoopback, caplog: pytest.LogCaptureFixture
) -> None:
    # python_http_client logs every request's headers, Authorization included, at DEBUG.
    caplog.set_level(logging.DEBUG)
    provider = SendGridProvider(API_KEY, "notify@example.com", base_url=server.base_url)

    provider.send(email())

    assert API_KEY not in caplog.text


def test_sends_reuse_one_kept_alive_connection(server: SendGridLoopback) -> None:
    # In production every new connection is a TLS handshake: sends share pooled connections.
    provider = SendGridProvider(API_KEY, "notify@example.com", base_url=server.base_url)
    assert server._httpd is not None
    connections: list[object] = []
    accept = server._httpd.process_request

    def counting(request: object, client_address: object) -> None:
        connections.append(client_address)
        accept(request, client_address)

    server._httpd.process_request = counting  # type: ignore[method-assign]

    for n in range(5):
        provider.send(email(job_id=f"job-{n}"))

    assert len(server.requests) == 5 and not server.spec_violations
    assert len(connections) == 1
    assert all(r.header("Authorization") == f"Bearer {API_KEY}" for r in server.requests)


def test_concurrent_sends_use_at_most_pool_size_connections(server: SendGridLoopback) -> None:
    from concurrent.futures import ThreadPoolExecutor

    accepted: list[object] = []
    httpd: Any = server._httpd
    original = httpd.process_request

    def count(request: Any, client_address: Any) -> None:
        accepted.append(client_address)
        original(request, client_address)

    httpd.process_request = count
    provider = SendGridProvider(
        API_KEY, "notify@example.com", base_url=server.base_url, pool_size=4
    )
    server.delay_seconds = 0.05  # each request is still in flight when the next ones start

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: provider.send(email(job_id=f"job-{n}")), range(4)))
    first_round = len(accepted)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: provider.send(email(job_id=f"again-{n}")), range(4)))

    assert 2 <= first_round <= 4  # sent side by side, within the pool's size
    assert len(accepted) == first_round  # the second round reuses the kept-alive connections
    assert len(server.requests) == 8 and not server.spec_violations


def test_each_send_carries_its_own_body_and_length_with_the_same_headers(
    server: SendGridLoopback, provider: SendGridProvider
) -> None:
    # Sends copy one prepared request: no body, length or header may leak between them (the
    # stub reads Content-Length bytes, so a stale length would garble the next body).
    provider.send(email(job_id="job-1", to="ada@example.com"))
    long = email(job_id="job-2", to="grace.hopper@example.com")
    provider.send(long)
    provider.send(email(job_id="job-3", to="ada@example.com"))

    assert server.spec_violations == []
    jobs = [r.body["personalizations"][0]["custom_args"]["job_id"] for r in server.requests]
    assert jobs == ["job-1", "job-2", "job-3"]
    assert server.requests[1].body["personalizations"][0]["to"][0]["email"] == long.to
    for request in server.requests:
        assert request.header("Content-Type") == "application/json"
        assert request.header("Authorization") == f"Bearer {API_KEY}"
        assert (request.header("User-Agent") or "").startswith("sendgrid/")
