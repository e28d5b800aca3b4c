"""Settings: validated at start-up, one line naming the variable, secrets never shown."""

from __future__ import annotations

import pytest

from notifier.config import load_settings, mask_url
from notifier.errors import ConfigError, PermanentDeliveryError
from notifier.providers.base import TextMessage
from notifier.providers.registry import build_providers


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("NOTIFIER_", "SENDGRID_", "TWILIO_", "DATABASE_", "REDIS_", "EMAIL_")):
            monkeypatch.delenv(name)


def test_missing_redis_url_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^REDIS_URL is not set$"):
        load_settings().require_redis_url()


def test_malformed_number_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_POLL_INTERVAL", "soon")
    with pytest.raises(ConfigError, match=r"^NOTIFIER_POLL_INTERVAL is malformed"):
        load_settings()


def test_unknown_choice_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_EMAIL_PROVIDER", "mailgun")
    with pytest.raises(ConfigError, match=r"^NOTIFIER_EMAIL_PROVIDER is malformed"):
        load_settings()


def test_no_provider_without_credentials_or_a_choice() -> None:
    settings = load_settings()
    assert (settings.resolved_email_provider, settings.resolved_sms_provider) == (None, None)


def test_a_worker_without_provider_credentials_is_refused_naming_the_variables() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings().require_providers()
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(
        "SENDGRID_API_KEY is not set: set it (with EMAIL_FROM), or NOTIFIER_EMAIL_PROVIDER=console"
        " to print emails instead of sending them"
    )
    assert "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not set" in message
    assert "NOTIFIER_SMS_PROVIDER=console" in message


def test_a_channel_without_a_provider_fails_its_jobs_readably_instead_of_sending_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFIER_EMAIL_PROVIDER", "console")
    settings = load_settings()
    assert settings.require_providers() == ("console", None)
    assert list(settings.missing_providers()) == ["sms"]
    providers = build_providers(settings)
    assert providers["email"].name == "console"
    for channel in ("sms", "whatsapp"):
        with pytest.raises(PermanentDeliveryError) as failed:
            providers[channel].send(TextMessage(job_id="j1", to="+15551234567", body="hi"))
        assert failed.value.code == "NO_PROVIDER"
        assert failed.value.message.startswith(
            "no SMS provider is configured: TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not set"
        )
        assert not providers[channel].guarded_by_breaker


def test_console_only_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_EMAIL_PROVIDER", "console")
    monkeypatch.setenv("NOTIFIER_SMS_PROVIDER", "console")
    assert load_settings().require_providers() == ("console", "console")


def test_partial_twilio_credentials_name_the_missing_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC1")
    with pytest.raises(ConfigError, match=r"^TWILIO_AUTH_TOKEN is not set \(TWILIO_ACCOUNT_SID is"):
        load_settings()


def test_commands_that_do_not_send_need_no_provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/app")
    settings = load_settings()  # what migrate, status, web, poller, pause... load
    assert settings.require_database_url() == "postgresql://db/app"


def test_the_worker_settings_module_refuses_to_start_without_providers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib
    import sys

    monkeypatch.setenv("DATABASE_URL", "postgresql://db/app")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.delitem(sys.modules, "notifier.rq_settings", raising=False)
    with pytest.raises(SystemExit) as stopped:
        importlib.import_module("notifier.rq_settings")
    monkeypatch.delitem(sys.modules, "notifier.rq_settings", raising=False)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith("notifier: SENDGRID_API_KEY is not set")


def test_building_providers_refuses_when_no_channel_has_one() -> None:
    with pytest.raises(ConfigError, match=r"^SENDGRID_API_KEY is not set.*; TWILIO_ACCOUNT_SID"):
        build_providers(load_settings())


def test_sendgrid_key_selects_sendgrid_and_requires_a_sender(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.secret")
    with pytest.raises(ConfigError, match="EMAIL_FROM is not set"):
        load_settings()
    monkeypatch.setenv("EMAIL_FROM", "a@example.com")
    assert load_settings().resolved_email_provider == "sendgrid"


def test_twilio_needs_a_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC1")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "tok")
    with pytest.raises(ConfigError, match="TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID"):
        load_settings()


def test_lease_must_outlast_the_provider_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_LEASE_SECONDS", "20")
    with pytest.raises(ConfigError, match="NOTIFIER_LEASE_SECONDS must exceed"):
        load_settings()


def test_secrets_are_not_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.very-secret")
    monkeypatch.setenv("EMAIL_FROM", "a@example.com")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:hunter2@db/app")
    text = repr(load_settings())
    assert "very-secret" not in text and "hunter2" not in text


def test_overrides_use_field_names() -> None:
    assert load_settings(send_concurrency=3).send_concurrency == 3


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://app:pw@db.example.com/app", "postgresql://app:***@db.example.com/app"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_mask_url_hides_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked
