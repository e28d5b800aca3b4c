"""Delivery feedback end to end: the real `notifier web` app on a loopback port, real Postgres,
the spec-checking loopback providers; SendGrid events signed with a fresh ECDSA P-256 key and
Twilio callbacks signed with Twilio's algorithm (implemented here from its documentation, not
with the validator under test). A bounce, a STOP and a one-click unsubscribe each stop the next
message; forged, unsigned, modified and repeated requests change nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notifier.config import Settings
from notifier.pipeline.delivery import Deliverer, DeliveryPolicy
from notifier.pipeline.render import Renderer, default_template_dir
from notifier.providers.sendgrid import SendGridProvider
from notifier.providers.twilio import TwilioProvider
from notifier.store import JobStore
from notifier.store.feedback import FeedbackStore
from notifier.store.postgres import PostgresCaller
from tests.integration import seed
from tests.integration.ops_support import make_settings, running_web
from tests.support.loopback import SendGridLoopback, TwilioLoopback, twilio_error

TWILIO_TOKEN = "loopback-auth-token"
TWILIO_SID = "AC" + "0123456789abcdef" * 2
PUBLIC_URL = "https://notifier.example.com/hooks"


@pytest.fixture(scope="module")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    """What SendGrid's settings page shows: the base64 DER SubjectPublicKeyInfo."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def sendgrid_headers(key: ec.EllipticCurvePrivateKey, body: bytes, ts: str = "") -> dict[str, str]:
    timestamp = ts or str(int(time.time()))
    signature = key.sign(timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    return {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode("ascii"),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }


def twilio_signature(url: str, params: dict[str, str], token: str = TWILIO_TOKEN) -> str:
    """Twilio's documented algorithm: HMAC-SHA1 of the URL followed by each POST field's name
    and value, sorted by name, base64."""
    data = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def post(base: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(base + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8")


def get(base: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(base + path, timeout=10) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8")


@pytest.fixture
def settings(
    database_url: str, redis_url: str, signing_key: ec.EllipticCurvePrivateKey
) -> Settings:
    return make_settings(
        database_url,
        redis_url,
        sendgrid_webhook_public_key=public_key_b64(signing_key),
        public_url=PUBLIC_URL,
        twilio_account_sid=TWILIO_SID,
        twilio_auth_token=TWILIO_TOKEN,
        twilio_from_number="+15557654321",
    )


@pytest.fixture
def web(settings: Settings) -> Iterator[str]:
    with running_web(settings) as base:
        yield base


@pytest.fixture
def feedback(database_url: str) -> Iterator[FeedbackStore]:
    store = FeedbackStore(PostgresCaller(database_url, max_size=2))
    yield store
    store.close()


def deliverer(
    store: JobStore, feedback: FeedbackStore, settings: Settings,
    sendgrid: SendGridLoopback, twilio: TwilioLoopback,
) -> Deliverer:  # fmt: skip
    """A worker's deliverer wired as build_deliverer does, against the loopback providers."""
    email = SendGridProvider("SG.key", "from@example.com", base_url=sendgrid.base_url, timeout=2)
    text = TwilioProvider(
        TWILIO_SID,
        TWILIO_TOKEN,
        from_number="+15557654321",
        base_url=twilio.base_url,
        status_callback_url=settings.resolved_status_callback_url,
        timeout=2,
    )
    policy = DeliveryPolicy(
        lease_seconds=30,
        backoff_base_seconds=0.01,
        backoff_cap_seconds=0.05,
        send_concurrency=1,
        unsubscribe_url_base=settings.resolved_unsubscribe_url_base,
    )
    providers = {"email": email, "sms": text, "whatsapp": text}
    return Deliverer(store, providers, {}, Renderer(default_template_dir()), policy, feedback)


@pytest.fixture
def worker(
    store: JobStore, feedback: FeedbackStore, settings: Settings,
    sendgrid: SendGridLoopback, twilio: TwilioLoopback,
) -> Deliverer:  # fmt: skip
    return deliverer(store, feedback, settings, sendgrid, twilio)


def send_one(db: psycopg.Connection[Any], store: JobStore, worker: Deliverer, recipient: str,
             method: str = "email") -> str:  # fmt: skip
    """Enqueue one job and deliver it; returns its id."""
    row = db.execute(
        "select enqueue_notification_job(%s, null, null, 'immediate', 'normal', %s, "
        '\'{"subject": "Hi", "body": "Hello"}\'::jsonb, 0) as id',
        (recipient, method),
    ).fetchone()
    assert row is not None
    worker.deliver_batch(store.claim(10, 30))
    return str(row["id"])


def log_count(db: psycopg.Connection[Any]) -> int:
    row = db.execute("select count(*) as n from notification_delivery_logs").fetchone()
    assert row is not None
    return int(row["n"])


def suppressions(db: psycopg.Connection[Any]) -> list[tuple[str, str, str, str]]:
    rows = db.execute(
        "select channel, address, reason, source from notification_suppressions order by address"
    ).fetchall()
    return [(r["channel"], r["address"], r["reason"], r["source"]) for r in rows]


def sg_event(
    job_id: str, event: str, email: str = "Ada@Example.com", **extra: Any
) -> dict[str, Any]:
    return {"email": email, "timestamp": int(time.time()), "event": event, "job_id": job_id,
            "sg_event_id": extra.pop("sg_event_id", uuid.uuid4().hex),
            "sg_message_id": "msg.1", **extra}  # fmt: skip


# SendGrid -------------------------------------------------------------------------------------


def test_signed_batch_is_logged_once_and_a_bounce_stops_the_next_email(
    db: psycopg.Connection[Any], store: JobStore, worker: Deliverer, web: str,
    sendgrid: SendGridLoopback, signing_key: ec.EllipticCurvePrivateKey,
) -> None:  # fmt: skip
    recipient = seed.add_recipient(db)["recipient"]
    job_id = send_one(db, store, worker, recipient)
    assert seed.job(db, job_id)["status"] == "sent" and len(sendgrid.requests) == 1
    events = [
        sg_event(job_id, "processed"),
        sg_event(job_id, "delivered", sg_event_id="ev-delivered"),
        sg_event(
            job_id,
            "bounce",
            type="bounce",
            status="5.1.1",
            reason="no such user",
            timestamp=1764633600,
        ),
        sg_event(str(uuid.uuid4()), "delivered"),  # not ours: 200 and a log line
    ]
    body = json.dumps(events).encode()
    status, answer = post(web, "/webhooks/sendgrid", body, sendgrid_headers(signing_key, body))
    assert status == 200, answer
    assert json.loads(answer) | {} == {"received": 4, "recorded": 2, "duplicates": 0,
                                       "suppressed": 1, "uncorrelated": 0, "unknown_jobs": 1}  # fmt: skip
    # Posted again (SendGrid retries): nothing new.
    status, answer = post(web, "/webhooks/sendgrid", body, sendgrid_headers(signing_key, body))
    assert status == 200 and json.loads(answer)["duplicates"] == 2
    logs = seed.logs(db, job_id)
    feedback_rows = [(r["status"], r["provider_event"]) for r in logs if r["provider_event_id"]]
    assert sorted(feedback_rows) == [("bounced", "bounce"), ("delivered", "delivered")]
    bounce = next(r for r in logs if r["provider_event"] == "bounce")
    assert (bounce["error_code"], bounce["error_message"]) == ("5.1.1", "no such user")
    assert bounce["delivery_time"].timestamp() == 1764633600
    assert seed.job(db, job_id)["status"] == "sent"  # accepted stays accepted
    assert suppressions(db) == [("email", "ada@example.com", "bounce", "sendgrid")]

    next_job = send_one(db, store, worker, recipient)
    job = seed.job(db, next_job)
    assert job["status"] == "skipped"
    assert job["failure_reason"].startswith("address suppressed: bounce (20")
    [log] = seed.logs(db, next_job)
    assert (log["status"], log["error_code"]) == ("blocked", "SUPPRESSED")
    assert len(sendgrid.requests) == 1  # no provider request


def test_forged_unsigned_and_modified_events_change_nothing(
    db: psycopg.Connection[Any], store: JobStore, worker: Deliverer, web: str,
    signing_key: ec.EllipticCurvePrivateKey,
) -> None:  # fmt: skip
    job_id = send_one(db, store, worker, seed.add_recipient(db)["recipient"])
    before = log_count(db)
    body = json.dumps([sg_event(job_id, "spamreport")]).encode()
    other_key = ec.generate_private_key(ec.SECP256R1())
    signed = sendgrid_headers(signing_key, body)
    modified = body.replace(b"spamreport", b"unsubscribe")
    attempts = {
        "unsigned": (body, {"Content-Type": "application/json"}),
        "forged": (body, sendgrid_headers(other_key, body)),
        "modified body": (modified, signed),
        "other timestamp": (body, signed | {"X-Twilio-Email-Event-Webhook-Timestamp": "1"}),
        "garbage signature": (body, signed | {"X-Twilio-Email-Event-Webhook-Signature": "%%%"}),
    }
    for what, (payload, headers) in attempts.items():
        status, _ = post(web, "/webhooks/sendgrid", payload, headers)
        assert status == 403, what
    assert log_count(db) == before and suppressions(db) == []
    # An old timestamp alone is no reason to refuse (SendGrid retries for 24 h).
    old = sendgrid_headers(signing_key, body, ts=str(int(time.time()) - 20 * 3600))
    assert post(web, "/webhooks/sendgrid", body, old)[0] == 200
    assert suppressions(db) == [("email", "ada@example.com", "spamreport", "sendgrid")]


def test_the_sendgrid_route_is_absent_without_a_key(database_url: str, redis_url: str) -> None:
    with running_web(make_settings(database_url, redis_url)) as base:
        assert post(base, "/webhooks/sendgrid", b"[]", {})[0] == 404
        assert post(base, "/webhooks/twilio", b"a=b", {})[0] == 404
        assert get(base, "/webhooks/sendgrid")[0] == 405


def test_a_batch_of_1000_events_is_one_quick_call(
    db: psycopg.Connection[Any], store: JobStore, worker: Deliverer, web: str,
    signing_key: ec.EllipticCurvePrivateKey,
) -> None:  # fmt: skip
    job_id = send_one(db, store, worker, seed.add_recipient(db)["recipient"])
    events = [sg_event(job_id, "delivered", email=f"u{i}@example.com") for i in range(500)]
    events += [sg_event(job_id, "bounce", email=f"b{i}@example.com") for i in range(500)]
    body = json.dumps(events).encode()
    started = time.monotonic()
    status, answer = post(web, "/webhooks/sendgrid", body, sendgrid_headers(signing_key, body))
    elapsed = time.monotonic() - started
    assert status == 200 and json.loads(answer)["recorded"] == 1000
    assert json.loads(answer)["suppressed"] == 500
    print(f"1000-event SendGrid batch answered in {elapsed * 1000:.0f} ms")
    assert elapsed < 5, elapsed  # SendGrid waits 3 s on average, Twilio 15 s


# Twilio ---------------------------------------------------------------------------------------


def callback(
    job_id: str, status: str, code: str = "", to: str = "+15005550006"
) -> tuple[str, dict[str, str]]:
    params = {"MessageSid": "SM" + "a" * 32, "MessageStatus": status, "To": to,
              "From": "+15557654321", "AccountSid": TWILIO_SID, "ApiVersion": "2010-04-01"}  # fmt: skip
    if code:
        params["ErrorCode"] = code
    return f"/webhooks/twilio?job_id={job_id}", params


def test_a_stop_in_a_status_callback_stops_the_next_text(
    db: psycopg.Connection[Any], store: JobStore, worker: Deliverer, web: str,
    twilio: TwilioLoopback,
) -> None:  # fmt: skip
    recipient = seed.add_recipient(db, phone="+1 500 555 0006")["recipient"]
    job_id = send_one(db, store, worker, recipient, "sms")
    [sent] = twilio.requests
    assert sent.body["StatusCallback"] == f"{PUBLIC_URL}/webhooks/twilio?job_id={job_id}"
    path, params = callback(job_id, "undelivered", "21610")
    body = urlencode(params).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    # Signed over the URL notifier sees, not the public one Twilio called: refused.
    local = twilio_signature(web + path, params)
    assert post(web, path, body, form | {"X-Twilio-Signature": local})[0] == 403
    assert post(web, path, body, form)[0] == 403
    assert suppressions(db) == []
    signed = form | {"X-Twilio-Signature": twilio_signature(PUBLIC_URL + path, params)}
    tampered = urlencode(params | {"ErrorCode": "30006"}).encode()
    assert post(web, path, tampered, signed)[0] == 403
    for _ in range(2):  # the same callback twice is recorded once
        status, answer = post(web, path, body, signed)
        assert status == 200, answer
    rows = [
        r for r in seed.logs(db, job_id) if r["provider"] == "twilio" and r["provider_event_id"]
    ]
    assert [(r["status"], r["error_code"]) for r in rows] == [("blocked", "21610")]
    assert suppressions(db) == [("sms", "+15005550006", "stop (21610)", "twilio")]

    next_job = send_one(db, store, worker, recipient, "sms")
    assert seed.job(db, next_job)["failure_reason"].startswith("address suppressed: stop (21610)")
    assert len(twilio.requests) == 1


def test_a_stop_answered_to_the_send_itself_suppresses_the_number(
    db: psycopg.Connection[Any], store: JobStore, worker: Deliverer, twilio: TwilioLoopback,
) -> None:  # fmt: skip
    recipient = seed.add_recipient(db)["recipient"]
    twilio.respond_with(400, twilio_error(21610, "Attempt to send to unsubscribed recipient"))
    first = send_one(db, store, worker, recipient, "sms")
    assert seed.job(db, first)["status"] == "failed"
    assert suppressions(db) == [("sms", "+15005550006", "stop (21610)", "twilio")]
    second = send_one(db, store, worker, recipient, "sms")
    assert seed.job(db, second)["status"] == "skipped"
    assert len(twilio.requests) == 1


# Unsubscribe ----------------------------------------------------------------------------------


def preference_token(db: psycopg.Connection[Any], recipient: str) -> str:
    row = db.execute(
        "select preference_token from recipients where id = %s", (recipient,)
    ).fetchone()
    assert row is not None
    return str(row["preference_token"])


def test_one_click_unsubscribe_stops_the_next_email_and_a_get_changes_nothing(
    db: psycopg.Connection[Any], store: JobStore, worker: Deliverer, web: str,
    sendgrid: SendGridLoopback,
) -> None:  # fmt: skip
    recipient = seed.add_recipient(db, name="<b>Ada</b>", email="ada+x@example.com")["recipient"]
    token = preference_token(db, recipient)
    send_one(db, store, worker, recipient)
    [request] = sendgrid.requests
    expected = f"{PUBLIC_URL}/unsubscribe/{token}"
    headers = request.body["headers"]
    assert headers["List-Unsubscribe"] == f"<{expected}>"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    status, page = get(web, f"/unsubscribe/{token}")
    assert status == 200 and '<form method="post">' in page and "a***@example.com" in page
    assert "<script" not in page and "http" not in page.split("</head>")[1]
    assert suppressions(db) == []  # mail scanners follow links: a GET changes nothing
    assert get(web, "/unsubscribe/not-a-known-token")[0] == 404
    assert post(web, "/unsubscribe/not-a-known-token", b"List-Unsubscribe=One-Click", {})[0] == 404
    assert post(web, f"/unsubscribe/{token}", b"", {})[0] == 400

    one_click = {"Content-Type": "application/x-www-form-urlencoded"}
    status, page = post(web, f"/unsubscribe/{token}", b"List-Unsubscribe=One-Click", one_click)
    assert status == 200 and "Done" in page
    assert suppressions(db) == [("email", "ada+x@example.com", "unsubscribe", "one-click")]
    assert "no longer receives" in get(web, f"/unsubscribe/{token}")[1]

    next_job = send_one(db, store, worker, recipient)
    assert seed.job(db, next_job)["failure_reason"].startswith("address suppressed: unsubscribe")
    assert len(sendgrid.requests) == 1


def test_operator_suppressions_are_listed_lifted_and_normalised(
    db: psycopg.Connection[Any], feedback: FeedbackStore
) -> None:
    assert feedback.add_suppression("sms", "whatsapp:+1 555 000 1111", "asked by phone") is True
    reason = db.execute(
        "select notifier_suppression_reason('sms', ' +1 555 000 1111') as r"
    ).fetchone()
    assert reason is not None and reason["r"].startswith("address suppressed: asked by phone (")
    assert feedback.add_suppression("sms", "+15550001111", "again") is False
    [row] = feedback.suppressions("sms")
    assert (row["address"], row["reason"], row["source"]) == ("+15550001111", "asked by phone",
                                                              "operator")  # fmt: skip
    assert feedback.suppressions("email") == []
    assert feedback.remove_suppression("sms", "+1 555 000 1111") is True
    assert feedback.remove_suppression("sms", "+15550001111") is False
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        feedback.add_suppression("fax", "x", "y")


def test_the_suppressions_command_lists_adds_and_lifts(
    db: psycopg.Connection[Any], base_env: dict[str, str]
) -> None:
    from tests.integration.test_ops import notifier

    added = notifier(
        base_env, "suppressions", "add", "email", "Ada@Example.com", "--reason", "asked"
    )
    assert added.returncode == 0 and "suppressed email Ada@Example.com" in added.stdout
    again = notifier(base_env, "suppressions", "add", "email", "ada@example.com", "--reason", "x")
    assert again.returncode == 0 and "already suppressed" in again.stdout
    listed = notifier(base_env, "suppressions", "list", "--channel", "email", "--json")
    [row] = json.loads(listed.stdout)
    assert (row["address"], row["reason"], row["source"]) == (
        "ada@example.com",
        "asked",
        "operator",
    )
    assert (
        "no suppressed addresses"
        in notifier(base_env, "suppressions", "list", "--channel", "sms").stdout
    )
    assert (
        notifier(base_env, "suppressions", "add", "email", "a@b.c").returncode == 2
    )  # no --reason
    assert notifier(base_env, "suppressions", "remove", "email", "ADA@example.com").returncode == 0
    assert notifier(base_env, "suppressions", "remove", "email", "ada@example.com").returncode == 1
    assert suppressions(db) == []


def test_status_and_metrics_count_provider_events_per_channel(
    db: psycopg.Connection[Any], store: JobStore, worker: Deliverer, web: str,
    settings: Settings, signing_key: ec.EllipticCurvePrivateKey,
) -> None:  # fmt: skip
    from notifier.operations.status import collect
    from tests.integration.ops_support import parse_metrics

    job_id = send_one(db, store, worker, seed.add_recipient(db)["recipient"])
    events = [sg_event(job_id, "delivered"), sg_event(job_id, "spamreport"),
              sg_event(job_id, "bounce", email="other@example.com")]  # fmt: skip
    body = json.dumps(events).encode()
    assert post(web, "/webhooks/sendgrid", body, sendgrid_headers(signing_key, body))[0] == 200

    _status, text = get(web, "/metrics")
    metrics = parse_metrics(text)

    def sample(name: str, **labels: str) -> float:
        return metrics.get((name, frozenset(labels.items())), 0.0)

    assert sample("notifier_feedback_events", method="email", event="bounce", status="bounced") == 1
    assert sample("notifier_feedback_events", method="email", event="spamreport",
                  status="blocked") == 1  # fmt: skip
    assert sample("notifier_suppressed_addresses", channel="email", source="sendgrid") == 2
    # The attempt's own `delivered` row counts once; the provider's delivered event is feedback.
    assert sample("notifier_deliveries", provider="sendgrid", method="email",
                  outcome="delivered") == 1  # fmt: skip
    report = collect(settings)
    assert report["feedback_24h"] == {"email": {"bounce": 1, "delivered": 1, "spamreport": 1}}
    assert report["suppressed"] == {"email": 2}


def test_an_inbound_stop_suppresses_the_number_and_start_lifts_it(
    db: psycopg.Connection[Any], web: str, feedback: FeedbackStore
) -> None:
    path = "/webhooks/twilio/inbound"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    feedback.add_suppression("sms", "+15550002222", "invalid number (21211)", "twilio")

    def inbound(sender: str, text: str, token: str = TWILIO_TOKEN) -> int:
        params = {"MessageSid": "SM" + uuid.uuid4().hex, "From": sender, "To": "+15557654321",
                  "Body": text, "AccountSid": TWILIO_SID}  # fmt: skip
        signature = twilio_signature(PUBLIC_URL + path, params, token)
        return post(
            web, path, urlencode(params).encode(), form | {"X-Twilio-Signature": signature}
        )[0]

    assert inbound("+15550001111", "STOP", token="forged") == 403
    assert suppressions(db) == [("sms", "+15550002222", "invalid number (21211)", "twilio")]
    assert inbound("+1 555 000 1111", "stop") == 200
    assert inbound("whatsapp:+15550003333", "STOP") == 200
    assert suppressions(db) == [
        ("sms", "+15550001111", "stop (inbound)", "twilio"),
        ("sms", "+15550002222", "invalid number (21211)", "twilio"),
        ("whatsapp", "+15550003333", "stop (inbound)", "twilio"),
    ]
    assert inbound("+15550001111", "START") == 200
    assert inbound("+15550002222", "START") == 200  # a START lifts a STOP, not a bad number
    assert [row[1] for row in suppressions(db)] == ["+15550002222", "+15550003333"]
