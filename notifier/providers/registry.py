"""Which provider serves which delivery method, chosen from the settings."""

from __future__ import annotations

from notifier.config import Settings
from notifier.providers.base import Provider
from notifier.providers.console import ConsoleProvider


def build_providers(settings: Settings) -> dict[str, Provider]:
    """Map each delivery method (email, sms, whatsapp) to its provider; push has none.

    Raises `ConfigError` when a channel has no provider (see `Settings.require_providers`)."""
    email_name, sms_name = settings.require_providers()
    console = ConsoleProvider(outbox_dir=settings.outbox_dir)
    email: Provider = console
    text: Provider = console
    if email_name == "sendgrid":
        from notifier.providers.sendgrid import SendGridProvider

        assert settings.sendgrid_api_key is not None and settings.email_from is not None
        email = SendGridProvider(
            settings.sendgrid_api_key.get_secret_value(),
            settings.email_from,
            base_url=settings.sendgrid_api_base,
            timeout=settings.provider_timeout,
        )
    if sms_name == "twilio":
        from notifier.providers.twilio import TwilioProvider

        assert settings.twilio_account_sid is not None and settings.twilio_auth_token is not None
        text = TwilioProvider(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            from_number=settings.twilio_from_number,
            messaging_service_sid=settings.twilio_messaging_service_sid,
            base_url=settings.twilio_api_base,
            status_callback_url=settings.twilio_status_callback_url,
            timeout=settings.provider_timeout,
        )
    return {"email": email, "sms": text, "whatsapp": text}
