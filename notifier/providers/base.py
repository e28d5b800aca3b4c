"""The one interface every provider implements, and the messages it sends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class EmailMessage:
    """A rendered email, ready to hand to a provider."""

    job_id: str
    to: str
    subject: str
    html: str
    text: str
    to_name: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TextMessage:
    """A rendered SMS or WhatsApp message; `to` is E.164 (`+15551234567`)."""

    job_id: str
    to: str
    body: str
    channel: Literal["sms", "whatsapp"] = "sms"


Message = EmailMessage | TextMessage


@dataclass(frozen=True)
class ProviderReceipt:
    """What the provider said when it accepted a message.

    `response` is a small, secret-free summary kept in the delivery log.
    """

    provider: str
    message_id: str | None
    response: dict[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    """Sends one message or raises `TransientDeliveryError` / `PermanentDeliveryError`.

    A `PermanentDeliveryError` carries its delivery-log status (bounced, blocked, failed), so the
    provider's error codes stay in its own module. `guarded_by_breaker` says whether calls go
    through a circuit breaker: true for a remote service that can be down, false for console.
    """

    name: str
    guarded_by_breaker: bool

    def send(self, message: Message) -> ProviderReceipt: ...
