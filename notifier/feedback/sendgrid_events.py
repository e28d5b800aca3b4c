"""SendGrid's signed Event Webhook: verify a request, then map its events.

Only the signed webhook is accepted. The signature (ECDSA P-256, SHA-256) covers the timestamp
header followed by the raw body, so it is checked on the bytes as received, before any parsing,
with SendGrid's own `EventWebhook` helper. SendGrid documents no timestamp window and retries a
failed delivery for up to 24 hours, so an old timestamp alone is not a reason to refuse:
replays are harmless because every event is recorded once (`sg_event_id`).
"""

from __future__ import annotations

import binascii
import json
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from sendgrid.helpers.eventwebhook import EventWebhook

from notifier.feedback.events import FeedbackEvent

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
# Event → delivery-log status. Events not listed (processed, deferred, open, click, ...) are
# received but not logged: they say nothing about whether the message arrived for good.
LOG_STATUS = {
    "delivered": "delivered",
    "bounce": "bounced",
    "spamreport": "blocked",
    "unsubscribe": "blocked",
    "group_unsubscribe": "blocked",
}
# Events after which the address is suppressed; the event's name is the suppression's reason.
SUPPRESSING_EVENTS = frozenset({"spamreport", "unsubscribe", "group_unsubscribe"})
# A dropped message whose address itself is bad (SendGrid's `reason` values).
BAD_ADDRESS_DROPS = ("bounced address", "invalid")


class SendGridVerifier:
    """Checks request signatures against the public key of the SendGrid settings page."""

    def __init__(self, public_key: str) -> None:
        self._webhook = EventWebhook(public_key.strip())  # raises ValueError on a bad key

    def verify(self, body: bytes, signature: str | None, timestamp: str | None) -> bool:
        """True only for a well-formed signature over timestamp + body under the key."""
        if not signature or not timestamp:
            return False
        try:
            # The helper encodes timestamp + payload as UTF-8; decoding strictly first gives
            # back exactly these bytes, and a body that is not UTF-8 was never signed JSON.
            payload = body.decode("utf-8")
            return bool(self._webhook.verify_signature(payload, signature, timestamp))
        except (InvalidSignature, UnicodeDecodeError, binascii.Error, ValueError, TypeError):
            return False


def parse_events(body: bytes) -> list[FeedbackEvent]:
    """The events of a verified body; `ValueError` when it is no JSON array of objects."""
    document = json.loads(body)
    if not isinstance(document, list) or not all(isinstance(e, dict) for e in document):
        raise ValueError("a SendGrid event webhook body is a JSON array of event objects")
    return [map_event(raw) for raw in document]


def map_event(raw: dict[str, Any]) -> FeedbackEvent:
    """One SendGrid event as a delivery-log row and, when called for, a suppression."""
    name = str(raw.get("event") or "")
    reason = _text(raw.get("reason") or raw.get("response"))
    log_status = LOG_STATUS.get(name)
    suppress = name if name in SUPPRESSING_EVENTS else None
    if name == "bounce" and str(raw.get("type") or "bounce") != "blocked":
        suppress = "bounce"  # a hard bounce; `blocked` is a temporary refusal by the receiver
    if name == "dropped":
        bad_address = (reason or "").strip().lower() in BAD_ADDRESS_DROPS
        log_status = "bounced" if bad_address else "failed"
        suppress = "dropped: " + (reason or "").lower() if bad_address else None
    return FeedbackEvent(
        job_id=_text(raw.get("job_id")),
        event_id=_text(raw.get("sg_event_id")),
        event=name,
        log_status=log_status,
        channel="email",
        address=_text(raw.get("email")),
        error_code=_text(raw.get("status")),
        reason=reason,
        occurred_at=_timestamp(raw.get("timestamp")),
        message_id=_text(raw.get("sg_message_id")),
        suppress=suppress,
    )


def _text(value: object) -> str | None:
    if value is None or value == "":
        return None
    return str(value)[:1000]


def _timestamp(value: object) -> str | None:
    """SendGrid's Unix seconds as ISO 8601 (None when absent or not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return None
