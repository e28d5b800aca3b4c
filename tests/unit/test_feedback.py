"""Delivery feedback without servers: signature checks on raw bytes, event → log status and
suppression, the unsubscribe page's escaping, the settings that wire it up, and routing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notifier.config import load_settings
from notifier.errors import ConfigError
from notifier.feedback import sendgrid_events, twilio_status, unsubscribe
from notifier.operations import web
from notifier.providers.twilio import classify_twilio_error

KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC = base64.b64encode(
    KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


def sign(body: bytes, timestamp: str = "1764633600", key: Any = KEY) -> str:
    return base64.b64encode(key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()


# SendGrid ---------------------------------------------------------------------------------------


def test_sendgrid_signature_is_checked_on_the_exact_bytes() -> None:
    verifier = sendgrid_events.SendGridVerifier(PUBLIC)
    body = '[{"event":"delivered","email":"é@example.com"}]'.encode()
    assert verifier.verify(body, sign(body), "1764633600")
    assert not verifier.verify(body + b" ", sign(body), "1764633600")
    assert not verifier.verify(body, sign(body), "1764633601")
    assert not verifier.verify(body, None, "1764633600")
    assert not verifier.verify(body, sign(body), None)
    assert not verifier.verify(body, "not base64!", "1764633600")
    assert not verifier.verify(body, base64.b64encode(b"short").decode(), "1764633600")
    other = ec.generate_private_key(ec.SECP256R1())
    assert not verifier.verify(body, sign(body, key=other), "1764633600")
    latin = "é".encode("latin-1")
    assert not verifier.verify(latin, sign(latin), "1764633600")


@pytest.mark.parametrize(
    ("raw", "log_status", "suppress"),
    [
        ({"event": "delivered"}, "delivered", None),
        ({"event": "bounce", "type": "bounce"}, "bounced", "bounce"),
        ({"event": "bounce"}, "bounced", "bounce"),
        ({"event": "bounce", "type": "blocked"}, "bounced", None),  # temporary: not suppressed
        ({"event": "dropped", "reason": "Bounced Address"}, "bounced", "dropped: bounced address"),
        ({"event": "dropped", "reason": "Invalid"}, "bounced", "dropped: invalid"),
        ({"event": "dropped", "reason": "Invalid SMTPAPI header"}, "failed", None),
        ({"event": "dropped", "reason": "Spam Content"}, "failed", None),
        ({"event": "spamreport"}, "blocked", "spamreport"),
        ({"event": "unsubscribe"}, "blocked", "unsubscribe"),
        ({"event": "group_unsubscribe"}, "blocked", "group_unsubscribe"),
        ({"event": "deferred"}, None, None),
        ({"event": "processed"}, None, None),
        ({"event": "open"}, None, None),
    ],
)
def test_sendgrid_events_map_to_log_status_and_suppression(
    raw: dict[str, Any], log_status: str | None, suppress: str | None
) -> None:
    mapped = sendgrid_events.map_event(raw | {"email": "a@example.com", "job_id": "j"})
    assert (mapped.log_status, mapped.suppress) == (log_status, suppress)
    assert (mapped.channel, mapped.address, mapped.job_id) == ("email", "a@example.com", "j")


def test_sendgrid_event_fields_are_carried() -> None:
    [mapped] = sendgrid_events.parse_events(
        json.dumps([{"event": "bounce", "sg_event_id": "e1", "sg_message_id": "m1",
                     "timestamp": 1764633600, "status": "5.1.1", "reason": "no such user"}]).encode()
    )  # fmt: skip
    assert mapped.event_id == "e1" and mapped.message_id == "m1"
    assert mapped.occurred_at == "2025-12-02T00:00:00+00:00"
    assert (mapped.error_code, mapped.reason) == ("5.1.1", "no such user")
    assert mapped.job_id is None


@pytest.mark.parametrize("body", [b"{}", b"[1]", b"not json", b'{"event": "bounce"}'])
def test_a_body_that_is_no_event_array_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        sendgrid_events.parse_events(body)


# Twilio -----------------------------------------------------------------------------------------


def twilio_signature(url: str, params: dict[str, str], token: str) -> str:
    data = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def test_twilio_signature_covers_the_url_and_every_field() -> None:
    url = "https://n.example.com/webhooks/twilio?job_id=1"
    params = {"MessageSid": "SM1", "MessageStatus": "delivered", "To": "+15550001111"}
    good = twilio_signature(url, params, "tok")
    assert twilio_status.verify("tok", url, params, good)
    assert not twilio_status.verify("other", url, params, good)
    assert not twilio_status.verify("tok", url.replace("=1", "=2"), params, good)
    assert not twilio_status.verify("tok", url, params | {"ErrorCode": "21610"}, good)
    assert not twilio_status.verify("tok", url, params, None)


@pytest.mark.parametrize(
    ("status", "code", "log_status", "suppress"),
    [
        ("delivered", "", "delivered", None),
        ("sent", "", None, None),
        ("queued", "", None, None),
        ("undelivered", "21610", "blocked", "stop (21610)"),
        ("failed", "21211", "bounced", "invalid number (21211)"),
        ("undelivered", "21614", "bounced", "not a mobile number (21614)"),
        ("undelivered", "30005", "bounced", "unknown handset (30005)"),
        ("undelivered", "30006", "bounced", "landline or unreachable carrier (30006)"),
        ("undelivered", "30007", "failed", None),
        ("undelivered", "30003", "failed", None),
        ("failed", "", "failed", None),
    ],
)
def test_twilio_statuses_map_to_log_status_and_suppression(
    status: str, code: str, log_status: str | None, suppress: str | None
) -> None:
    params = {"MessageSid": "SM1", "MessageStatus": status, "To": "+15550001111"}
    if code:
        params["ErrorCode"] = code
    mapped = twilio_status.map_callback(params, "job-1")
    assert (mapped.log_status, mapped.suppress) == (log_status, suppress)
    assert (mapped.event_id, mapped.job_id, mapped.channel) == (f"SM1:{status}", "job-1", "sms")


def test_a_whatsapp_callback_is_about_the_whatsapp_channel() -> None:
    params = {"MessageSid": "SM1", "MessageStatus": "failed", "To": "whatsapp:+15550001111"}
    assert twilio_status.map_callback(params, None).channel == "whatsapp"


def test_a_stop_refused_at_send_carries_its_suppression() -> None:
    assert classify_twilio_error(400, 21610).suppress == "stop (21610)"  # type: ignore[attr-defined]
    assert classify_twilio_error(400, 30007).suppress is None  # type: ignore[attr-defined]


# The unsubscribe page ---------------------------------------------------------------------------


def test_the_page_escapes_and_loads_nothing_external() -> None:
    page = unsubscribe.confirm_page('"><script>alert(1)</script>@x.com', already=False)
    assert "<script>" not in page and "&lt;script&gt;" not in page  # masked before escaping
    page = unsubscribe.confirm_page("a@<b>.com", already=False)
    assert "&lt;b&gt;.com" in page and "<b>" not in page
    assert 'name="List-Unsubscribe" value="One-Click"' in page
    assert "src=" not in page and "href=" not in page and "http" not in page
    assert unsubscribe.mask_email("ada@example.com") == "a***@example.com"
    assert unsubscribe.mask_email(None) == "your address"


# Settings and routing ---------------------------------------------------------------------------


def test_public_url_defaults_the_callback_and_unsubscribe_urls() -> None:
    settings = load_settings(public_url="https://n.example.com/base/")
    assert settings.public_url == "https://n.example.com/base"
    assert settings.resolved_status_callback_url == "https://n.example.com/base/webhooks/twilio"
    assert settings.resolved_unsubscribe_url_base == "https://n.example.com/base/unsubscribe"
    explicit = load_settings(
        public_url="https://n.example.com",
        twilio_status_callback_url="https://cb.example.com/t",
        unsubscribe_url_base="https://app.example.com/prefs/{token}",
    )
    assert explicit.resolved_status_callback_url == "https://cb.example.com/t"
    assert explicit.resolved_unsubscribe_url_base == "https://app.example.com/prefs/{token}"
    assert load_settings().resolved_status_callback_url is None


@pytest.mark.parametrize("value", ["notifier.example.com", "ftp://x", "https://x/?a=1"])
def test_a_malformed_public_url_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^NOTIFIER_PUBLIC_URL is malformed"):
        load_settings(public_url=value)


@pytest.mark.parametrize("value", ["not a key", base64.b64encode(b"x" * 91).decode()])
def test_a_malformed_public_key_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^SENDGRID_WEBHOOK_PUBLIC_KEY is malformed"):
        load_settings(sendgrid_webhook_public_key=value)


def call(app: web.WebApp, path: str, method: str, body: bytes = b"") -> tuple[str, str]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"] = status

    environ = {"PATH_INFO": path, "REQUEST_METHOD": method, "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body)}  # fmt: skip
    body = b"".join(app(environ, start_response)).decode()
    return seen["status"], body


def test_webhooks_refuse_before_touching_the_database() -> None:
    app = web.WebApp(load_settings(sendgrid_webhook_public_key=PUBLIC))  # no DATABASE_URL
    status, _ = call(app, "/webhooks/sendgrid", "POST", b'[{"event": "bounce"}]')
    assert status == "403 Forbidden"
    assert call(app, "/webhooks/sendgrid", "GET")[0] == "405 Method Not Allowed"
    assert call(app, "/webhooks/twilio", "POST", b"a=b")[0] == "404 Not Found"
    assert call(app, "/unsubscribe/", "GET")[0] == "404 Not Found"
    assert call(app, "/unsubscribe/a/b", "GET")[0] == "404 Not Found"
    assert call(app, "/unsubscribe/tok", "DELETE")[0] == "405 Method Not Allowed"


@pytest.mark.parametrize(
    ("params", "keyword"),
    [
        ({"Body": "STOP"}, "stop"),
        ({"Body": " stop "}, "stop"),
        ({"Body": "Unsubscribe"}, "stop"),
        ({"Body": "start"}, "start"),
        ({"Body": "please stop texting me"}, None),  # not the keyword alone: Twilio ignores it too
        ({"Body": "Hello"}, None),
        ({"Body": "arrêt", "OptOutType": "STOP"}, "stop"),  # Advanced Opt-Out decided
        ({"Body": "oui", "OptOutType": "START"}, "start"),
    ],
)
def test_inbound_opt_out_keywords(params: dict[str, str], keyword: str | None) -> None:
    assert twilio_status.inbound_keyword(params) == keyword
