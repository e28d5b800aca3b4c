"""The loopback servers must catch what the real APIs reject, or provider tests prove nothing."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import requests

from tests.support.loopback import SendGridLoopback, TwilioLoopback, sendgrid_error

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
VALID_MAIL: dict[str, Any] = {
    "personalizations": [{"to": [{"email": "ada@example.com"}], "custom_args": {"job_id": "7"}}],
    "from": {"email": "notify@example.com"},
    "subject": "Hello",
    "content": [{"type": "text/plain", "value": "Hi"}],
}
BEARER = {"Authorization": "Bearer SG.key.secret"}


def post_mail(server: SendGridLoopback, body: Any, headers: dict[str, str] | None = None) -> Any:
    return requests.post(
        f"{server.base_url}/v3/mail/send",
        json=body,
        headers=BEARER if headers is None else headers,
        timeout=5,
    )


def post_message(server: TwilioLoopback, form: dict[str, str], path: str = MESSAGES_PATH) -> Any:
    return requests.post(server.base_url + path, data=form, auth=(ACCOUNT_SID, "token"), timeout=5)


def test_sendgrid_valid_request_gets_202_with_message_id(sendgrid: SendGridLoopback) -> None:
    response = post_mail(sendgrid, VALID_MAIL)

    assert response.status_code == 202
    assert response.headers["X-Message-Id"]
    assert sendgrid.spec_violations == []
    assert sendgrid.requests[0].body == VALID_MAIL


def test_sendgrid_top_level_custom_args_object_is_a_violation(sendgrid: SendGridLoopback) -> None:
    response = post_mail(sendgrid, {**VALID_MAIL, "custom_args": {"job_id": "7"}})

    assert response.status_code == 400
    assert "custom_args" in response.json()["errors"][0]["message"]
    assert len(sendgrid.spec_violations) == 1
    assert "custom_args" in sendgrid.spec_violations[0]


def test_sendgrid_request_without_authorization_is_a_violation(sendgrid: SendGridLoopback) -> None:
    response = post_mail(sendgrid, VALID_MAIL, headers={})

    assert response.status_code == 400
    assert "Security" in sendgrid.spec_violations[0]


def test_sendgrid_missing_from_is_a_violation(sendgrid: SendGridLoopback) -> None:
    body = {k: v for k, v in VALID_MAIL.items() if k != "from"}

    assert post_mail(sendgrid, body).status_code == 400
    assert "'from' is a required property" in sendgrid.spec_violations[0]


def test_unknown_path_is_a_violation(sendgrid: SendGridLoopback) -> None:
    response = requests.post(f"{sendgrid.base_url}/v3/mail/sned", json=VALID_MAIL, timeout=5)

    assert response.status_code == 400
    assert sendgrid.spec_violations != []


def test_twilio_valid_request_gets_201_with_message_sid(twilio: TwilioLoopback) -> None:
    form = {"To": "+15551234567", "From": "+15557654321", "Body": "Hi"}
    response = post_message(twilio, form)

    assert response.status_code == 201
    assert re.fullmatch(r"SM[0-9a-f]{32}", response.json()["sid"])
    assert response.json()["to"] == "+15551234567"
    assert twilio.spec_violations == []
    assert twilio.requests[0].body == form


def test_twilio_malformed_account_sid_is_a_violation(twilio: TwilioLoopback) -> None:
    form = {"To": "+15551234567", "Body": "Hi"}
    response = post_message(twilio, form, path="/2010-04-01/Accounts/AC123/Messages.json")

    assert response.status_code == 400
    assert "AccountSid" in twilio.spec_violations[0]


def test_twilio_form_without_to_is_a_violation(twilio: TwilioLoopback) -> None:
    assert post_message(twilio, {"From": "+15557654321", "Body": "Hi"}).status_code == 400
    assert "'To' is a required property" in twilio.spec_violations[0]


def test_twilio_checks_the_pattern_of_every_field_sent(twilio: TwilioLoopback) -> None:
    # The checker prunes unused form properties for speed; the ones sent must still be checked.
    form = {"To": "+15551234567", "Body": "Hi", "MessagingServiceSid": "MG-not-a-sid"}

    assert post_message(twilio, form).status_code == 400
    assert "MG-not-a-sid" in twilio.spec_violations[0]


def test_twilio_request_without_basic_auth_is_a_violation(twilio: TwilioLoopback) -> None:
    response = requests.post(twilio.base_url + MESSAGES_PATH, data={"To": "+1555"}, timeout=5)

    assert response.status_code == 400
    assert "Security" in twilio.spec_violations[0]


def test_scripted_answers_come_in_order_then_the_default(sendgrid: SendGridLoopback) -> None:
    sendgrid.respond_with(503, headers={"Retry-After": "3"})
    sendgrid.respond_with(400, sendgrid_error("bad from", field="from"))

    first, second, third = (post_mail(sendgrid, VALID_MAIL) for _ in range(3))

    assert (first.status_code, first.headers["Retry-After"]) == (503, "3")
    assert second.json()["errors"][0] == {"message": "bad from", "field": "from", "help": None}
    assert third.status_code == 202


def test_a_violation_does_not_use_up_a_scripted_answer(sendgrid: SendGridLoopback) -> None:
    sendgrid.respond_with(503)

    assert post_mail(sendgrid, {}).status_code == 400
    assert post_mail(sendgrid, VALID_MAIL).status_code == 503


def test_dropped_connection_gets_no_answer(sendgrid: SendGridLoopback) -> None:
    sendgrid.drop_connection()

    with pytest.raises(requests.ConnectionError):
        post_mail(sendgrid, VALID_MAIL)


def test_delay_seconds_slows_every_answer() -> None:
    with SendGridLoopback(delay_seconds=0.15) as server:
        started = time.perf_counter()
        post_mail(server, VALID_MAIL)
        assert time.perf_counter() - started >= 0.15


def test_keep_alive_requests_do_not_wait_for_nagle(twilio: TwilioLoopback) -> None:
    # Without disable_nagle_algorithm each reused-connection request waits ~40 ms.
    form = {"To": "+15551234567", "From": "+15557654321", "Body": "Hi"}
    with requests.Session() as session:
        session.auth = (ACCOUNT_SID, "token")
        session.post(twilio.base_url + MESSAGES_PATH, data=form, timeout=5)  # warm the checker
        started = time.perf_counter()
        for _ in range(10):
            session.post(twilio.base_url + MESSAGES_PATH, data=form, timeout=5)
        elapsed = time.perf_counter() - started

    assert elapsed < 0.4, f"10 keep-alive requests took {elapsed:.2f} s"
    assert twilio.spec_violations == []


def test_clear_forgets_requests_violations_and_script(sendgrid: SendGridLoopback) -> None:
    sendgrid.respond_with(503)
    post_mail(sendgrid, {})

    sendgrid.clear()

    assert (sendgrid.requests, sendgrid.spec_violations) == ([], [])
    assert post_mail(sendgrid, VALID_MAIL).status_code == 202


def test_a_stopped_server_drops_kept_alive_connections() -> None:
    form = {"To": "+15551234567", "Body": "Hi"}
    with requests.Session() as session:
        session.auth = (ACCOUNT_SID, "token")
        with TwilioLoopback() as server:
            assert session.post(server.base_url + MESSAGES_PATH, data=form, timeout=5).ok

        with pytest.raises(requests.ConnectionError):
            session.post(server.base_url + MESSAGES_PATH, data=form, timeout=5)
