"""Which providers exist, which serve which delivery method, and which sit behind a breaker."""

from __future__ import annotations

from notifier.config import Settings
from notifier.errors import PermanentDeliveryError
from notifier.providers.base import Message, Provider, ProviderReceipt
from notifier.providers.console import ConsoleProvider
from notifier.providers.sendgrid import SendGridProvider
from notifier.providers.twilio import TwilioProvider

PROVIDER_CLASSES = (SendGridProvider, TwilioProvider, ConsoleProvider)
# Provider names whose calls go through a circuit breaker, in a stable order (for /metrics).
BREAKER_GUARDED: tuple[str, ...] = tuple(
    cls.name for cls in PROVIDER_CLASSES if cls.guarded_by_breaker
)


def guarded_by_breaker(name: str) -> bool:
    """Whether the provider called `name` has a circuit breaker (an unknown name has none)."""
    return name in BREAKER_GUARDED


class UnconfiguredChannel:
    """Stands in for a channel's missing provider: every job on it fails, readably, without a
    request, instead of being 'sent' nowhere (see `Settings.missing_providers`)."""

    guarded_by_breaker = False

    def __init__(self, channel: str, how_to_fix: str) -> None:
        self.name = f"no {channel} provider"
        self._reason = f"no {channel} provider is configured: {how_to_fix}"

    def send(self, message: Message) -> ProviderReceipt:
        raise PermanentDeliveryError(self._reason, code="NO_PROVIDER")


def build_providers(settings: Settings) -> dict[str, Provider]:
    """Map each delivery method (email, sms, whatsapp) to its provider; push has none.

    A channel without a provider gets an `UnconfiguredChannel`; `ConfigError` when no channel
    has one (see `Settings.require_providers`)."""
    email_name, sms_name = settings.require_providers()
    missing = settings.missing_providers()
    console = ConsoleProvider(outbox_dir=settings.outbox_dir)
    email: Provider = console if email_name == "console" else UnconfiguredChannel(
        "email", missing.get("email", "")
    )
    text: Provider = console if sms_name == "console" else UnconfiguredChannel(
        "SMS", missing.get("sms", "")
    )
    if email_name == "sendgrid":
        assert settings.sendgrid_api_key is not None and settings.email_from is not None
        email = SendGridProvider(
            settings.sendgrid_api_key.get_secret_value(),
            settings.email_from,
            base_url=settings.sendgrid_api_base,
            timeout=settings.provider_timeout,
            pool_size=settings.send_concurrency,
        )
    if sms_name == "twilio":
        assert settings.twilio_account_sid is not None and settings.twilio_auth_token is not None
        text = TwilioProvider(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            from_number=settings.twilio_from_number,
            messaging_service_sid=settings.twilio_messaging_service_sid,
            base_url=settings.twilio_api_base,
            status_callback_url=settings.resolved_status_callback_url,
            timeout=settings.provider_timeout,
        )
    return {"email": email, "sms": text, "whatsapp": text}
