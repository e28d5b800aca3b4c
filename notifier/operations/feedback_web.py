"""The delivery-feedback routes of `notifier web`: the signed SendGrid and Twilio webhooks and
the unsubscribe page. notifier/operations/web.py routes to them.

Order inside every webhook: the route exists (its secret is configured) → the body is read,
bounded → the signature is checked on the raw bytes → only then is anything parsed → the whole
batch is recorded in one SQL call. A forged or unsigned request is answered 403 before the body
is even parsed, and changes nothing.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any
from urllib.parse import parse_qs, parse_qsl

from notifier.config import Settings
from notifier.feedback import sendgrid_events, twilio_status, unsubscribe
from notifier.feedback.events import FeedbackEvent
from notifier.log import event
from notifier.store.backend import open_caller
from notifier.store.feedback import FeedbackStore

logger = logging.getLogger("notifier.operations.feedback_web")
Response = tuple[int, list[tuple[str, str]], bytes]
# SendGrid posts at most a few MB per batch (its batches are sized by count and time).
MAX_BODY_BYTES = 8 * 1024 * 1024
_HTML = [("Content-Type", "text/html; charset=utf-8")]


class BodyTooLarge(Exception):
    """The request body is longer than MAX_BODY_BYTES."""


class FeedbackRoutes:
    """Handlers for /webhooks/sendgrid, /webhooks/twilio and /unsubscribe/<token>.

    The database pool is opened on first use, so `notifier web` without webhooks configured
    never connects for them."""

    def __init__(self, settings: Settings, store: FeedbackStore | None = None) -> None:
        self._settings = settings
        self._store = store
        self._lock = threading.Lock()
        key = settings.sendgrid_webhook_public_key
        self._sendgrid = None if key is None else sendgrid_events.SendGridVerifier(key)
        token = settings.twilio_auth_token
        self._twilio_token = None if token is None else token.get_secret_value()

    def close(self) -> None:
        """Close the database pool, if one was opened."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def store(self) -> FeedbackStore:
        with self._lock:
            if self._store is None:
                # DATABASE_URL or the Supabase REST API: webhooks work on either backend.
                caller = open_caller(self._settings, pool_size=self._settings.web_threads)
                self._store = FeedbackStore(caller)
            return self._store

    def sendgrid(self, environ: dict[str, Any]) -> Response:
        """SendGrid's signed Event Webhook: 404 without SENDGRID_WEBHOOK_PUBLIC_KEY, 403 for a
        missing or bad signature, 200 once the batch is recorded."""
        if self._sendgrid is None:
            return _json(404, {"error": "the SendGrid event webhook is not configured"})
        body = read_body(environ)
        signature = environ.get(wsgi_header(sendgrid_events.SIGNATURE_HEADER))
        timestamp = environ.get(wsgi_header(sendgrid_events.TIMESTAMP_HEADER))
        if not self._sendgrid.verify(body, signature, timestamp):
            event(logger, "webhook_rejected", logging.WARNING, provider="sendgrid",
                  reason="missing or invalid signature" if signature else "unsigned")  # fmt: skip
            return _json(403, {"error": "missing or invalid signature"})
        try:
            events = sendgrid_events.parse_events(body)
        except ValueError as error:
            return _json(400, {"error": f"not a SendGrid event batch: {error}"})
        return self._record("sendgrid", events)

    def twilio(self, environ: dict[str, Any]) -> Response:
        """Twilio's status callback: 404 unless TWILIO_AUTH_TOKEN and NOTIFIER_PUBLIC_URL are
        set, 403 for a bad signature, 200 once recorded."""
        params = self._signed_twilio_form(environ)
        if isinstance(params, tuple):
            return params
        query = str(environ.get("QUERY_STRING") or "")
        job_ids = parse_qs(query).get("job_id") or []
        job_id = job_ids[0] if job_ids else None
        return self._record("twilio", [twilio_status.map_callback(params, job_id)])

    def twilio_inbound(self, environ: dict[str, Any]) -> Response:
        """Twilio's incoming-message webhook (optional): a STOP suppresses the sender's number,
        a START lifts a STOP suppression. Answers empty TwiML: Twilio's own opt-out handling
        sends the reply."""
        params = self._signed_twilio_form(environ)
        if isinstance(params, tuple):
            return params
        keyword = twilio_status.inbound_keyword(params)
        sender = params.get("From") or ""
        channel = twilio_status.channel_of(sender)
        if keyword == "stop" and sender:
            self.store().add_suppression(
                channel, sender, twilio_status.INBOUND_STOP_REASON, "twilio",
                params.get("MessageSid"),
            )  # fmt: skip
        elif keyword == "start" and sender:
            self.store().remove_suppression(channel, sender, reason_prefix="stop")
        if keyword == "stop":
            event(logger, "inbound_opt_out", channel=channel)
        elif keyword == "start":
            event(logger, "inbound_opt_in", channel=channel)
        twiml = b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
        return 200, [("Content-Type", "text/xml")], twiml

    def _signed_twilio_form(self, environ: dict[str, Any]) -> dict[str, str] | Response:
        """The form fields of a request Twilio signed, or the answer refusing it (404 when not
        configured, 403 when the signature is not Twilio's for the public URL)."""
        if self._twilio_token is None or self._settings.public_url is None:
            return _json(404, {"error": "Twilio webhooks are not configured"})
        body = read_body(environ)
        query = str(environ.get("QUERY_STRING") or "")
        url = self._settings.public_url + str(environ.get("PATH_INFO") or "")
        if query:
            url += "?" + query
        try:
            params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            params = {}
        signature = environ.get(wsgi_header(twilio_status.SIGNATURE_HEADER))
        if not params or not twilio_status.verify(self._twilio_token, url, params, signature):
            event(logger, "webhook_rejected", logging.WARNING, provider="twilio",
                  reason="missing or invalid signature" if signature else "unsigned")  # fmt: skip
            return _json(403, {"error": "missing or invalid signature"})
        return params

    def unsubscribe(self, environ: dict[str, Any], token: str) -> Response:
        """GET shows the question (and changes nothing); POST, RFC 8058 one-click or the
        page's button, suppresses the recipient's email address. Unknown token: 404."""
        if environ.get("REQUEST_METHOD") == "POST":
            form = dict(parse_qsl(read_body(environ).decode("utf-8", "replace")))
            if form.get(unsubscribe.ONE_CLICK_FIELD) != unsubscribe.ONE_CLICK_VALUE:
                return 400, list(_HTML), unsubscribe.bad_request_page().encode("utf-8")
            result = self.store().unsubscribe(token)
            if result is None:
                return 404, list(_HTML), unsubscribe.not_found_page().encode("utf-8")
            event(logger, "unsubscribed", channel="email", added=bool(result.get("added")))
            return 200, list(_HTML), unsubscribe.done_page(result.get("email")).encode("utf-8")
        target = self.store().unsubscribe_target(token)
        if target is None:
            return 404, list(_HTML), unsubscribe.not_found_page().encode("utf-8")
        page = unsubscribe.confirm_page(target.get("email"), bool(target.get("suppressed")))
        return 200, list(_HTML), page.encode("utf-8")

    def _record(self, provider: str, events: list[FeedbackEvent]) -> Response:
        result = self.store().record_events(provider, [e.payload() for e in events])
        unknown = list(result.get("unknown_job_ids") or [])
        if unknown:
            shown = ",".join(str(j)[:64] for j in unknown[:20])
            event(logger, "feedback_unknown_jobs", logging.WARNING, provider=provider,
                  count=len(unknown), job_ids=shown)  # fmt: skip
        counts = {k: v for k, v in result.items() if k != "unknown_job_ids"}
        event(logger, "feedback_recorded", provider=provider, **counts)
        return _json(200, {**counts, "unknown_jobs": len(unknown)})


def read_body(environ: dict[str, Any]) -> bytes:
    """The request body, at most MAX_BODY_BYTES (`BodyTooLarge` beyond)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY_BYTES:
        raise BodyTooLarge
    if length <= 0:
        return b""
    stream = environ["wsgi.input"]
    return bytes(stream.read(length))


def _json(status: int, body: dict[str, Any]) -> Response:
    return status, [("Content-Type", "application/json")], json.dumps(body).encode("utf-8")


def wsgi_header(name: str) -> str:
    """The WSGI environ key of a request header: X-Twilio-Signature is HTTP_X_TWILIO_SIGNATURE."""
    return "HTTP_" + name.upper().replace("-", "_")
