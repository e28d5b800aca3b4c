"""One provider event, as the SQL function `record_notification_delivery_events` takes it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class FeedbackEvent:
    """A verified provider event, mapped.

    `log_status` is the delivery-log status the event adds (None: the event is not logged, e.g.
    an open or an intermediate status); `suppress` is the suppression reason when the address
    must never be sent to again (None otherwise). `event_id` is the dedupe key.
    """

    job_id: str | None
    event_id: str | None
    event: str
    log_status: str | None
    channel: str
    address: str | None
    error_code: str | None = None
    reason: str | None = None
    occurred_at: str | None = None  # ISO 8601; None: now
    message_id: str | None = None
    suppress: str | None = None

    def payload(self) -> dict[str, Any]:
        return asdict(self)
