"""Twilio message status callbacks: verify a request, then map its status.

`X-Twilio-Signature` is an HMAC of the URL Twilio called plus the sorted form fields. Behind a
proxy the URL notifier sees is not that one, so the caller passes the public URL
(NOTIFIER_PUBLIC_URL + path + query); the check is Twilio's own `RequestValidator`.
Error codes mean what the Twilio provider says they mean (notifier/providers/twilio.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator

from notifier.feedback.events import FeedbackEvent
from notifier.providers.twilio import PERMANENT_CODES, TRANSIENT_CODES, suppression_reason

SIGNATURE_HEADER = "X-Twilio-Signature"
# Final statuses that are logged; the intermediate ones (queued, sending, sent, accepted,
# scheduled, read, ...) are received but add no row.
FINAL_STATUSES = ("delivered", "undelivered", "failed")
# Twilio's default opt-out and opt-in keywords.
STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
INBOUND_STOP_REASON = "stop (inbound)"


def verify(auth_token: str, url: str, params: Mapping[str, str], signature: str | None) -> bool:
    """True when the signature is Twilio's for this URL and these form fields."""
    if not signature:
        return False
    return bool(RequestValidator(auth_token).validate(url, dict(params), signature))


def map_callback(params: Mapping[str, str], job_id: str | None) -> FeedbackEvent:
    """A status callback as a delivery-log row and, for a suppressing error, a suppression."""
    status = params.get("MessageStatus") or params.get("SmsStatus") or ""
    sid = params.get("MessageSid") or params.get("SmsSid") or None
    code = (params.get("ErrorCode") or "").strip() or None
    to = params.get("To") or None
    log_status: str | None = None
    if status == "delivered":
        log_status = "delivered"
    elif status in FINAL_STATUSES:
        log_status = _failure_status(code)
    return FeedbackEvent(
        job_id=job_id or None,
        event_id=f"{sid}:{status}" if sid and status else None,
        event=status,
        log_status=log_status,
        channel=channel_of(to),
        address=to,
        error_code=code,
        reason=_describe(code),
        message_id=sid,
        suppress=suppression_reason(code) if status in FINAL_STATUSES else None,
    )


def inbound_keyword(params: Mapping[str, str]) -> str | None:
    """`stop` or `start` for an inbound message that opts out or back in, else None.

    Twilio's Advanced Opt-Out says so in `OptOutType`; without it, the standard keywords
    (the message's only word, any case) decide, as Twilio's default opt-out handling does."""
    opt_out = (params.get("OptOutType") or "").strip().upper()
    word = opt_out or (params.get("Body") or "").strip().upper()
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    return None


def _failure_status(code: str | None) -> str:
    number = int(code) if code and code.isdigit() else None
    if number in PERMANENT_CODES:
        return str(PERMANENT_CODES[number][2])
    return "failed"


def _describe(code: str | None) -> str | None:
    number = int(code) if code and code.isdigit() else None
    if number in PERMANENT_CODES:
        return f"{number} {PERMANENT_CODES[number][1]}"
    if number in TRANSIENT_CODES:
        return f"{number} {TRANSIENT_CODES[number][1]}"
    return code


def channel_of(address: str | None) -> str:
    """The channel a Twilio address belongs to: `whatsapp:+E164` or a plain number (SMS)."""
    return "whatsapp" if (address or "").startswith("whatsapp:") else "sms"
