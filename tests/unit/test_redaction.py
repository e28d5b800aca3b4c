"""No secret in what operators see: endpoints instead of URLs, and every secret masked."""

from __future__ import annotations

import json

from notifier.config import load_settings
from notifier.redaction import MASK, Redactor, endpoint


def test_endpoint_is_host_port_and_database_only() -> None:
    assert endpoint("redis://:p%40ss@cache.internal:6380/2") == "cache.internal:6380/2"
    assert endpoint("postgresql://app:secret@db.example.com:5432/app") == "db.example.com:5432/app"
    assert endpoint("rediss://default:pw@redis.example.com") == "redis.example.com"
    assert endpoint("unix:///var/run/redis.sock") == "/var/run/redis.sock"
    assert endpoint(None) is None


def test_every_configured_secret_is_masked_raw_and_decoded() -> None:
    settings = load_settings(
        database_url="postgresql://app:pg%2Fsecret@db:5432/app",
        redis_url="redis://:redis-pass-1@cache:6379/0",
        email_provider="sendgrid", sendgrid_api_key="SG.key-123", email_from="n@example.com",
        sms_provider="console",
    )  # fmt: skip
    redact = Redactor.for_settings(settings)
    text = (
        "auth failed for pg/secret and pg%2Fsecret at postgresql://app:pg%2Fsecret@db:5432/app;"
        " redis-pass-1; key SG.key-123"
    )
    cleaned = redact(text)
    for secret in ("pg/secret", "pg%2Fsecret", "redis-pass-1", "SG.key-123"):
        assert secret not in cleaned
    assert cleaned.count(MASK) == 5


def test_short_values_are_not_treated_as_secrets() -> None:
    assert Redactor(["ab", "long-secret"])("ab long-secret") == "ab ***"


def test_passwords_of_keyword_dsns_and_password_parameters_are_masked() -> None:
    for database_url, password in (
        ("host=db port=5432 dbname=app user=app password='kw-Pass\\'9'", "kw-Pass'9"),
        ("postgresql://app@db:5432/app?password=query%40Pass1", "query@Pass1"),
    ):
        settings = load_settings(
            database_url=database_url, email_provider="console", sms_provider="console"
        )
        cleaned = Redactor.for_settings(settings)(f"FATAL: bad password {password}")
        assert password not in cleaned and cleaned.endswith(MASK), database_url


def test_values_are_redacted_before_serialisation() -> None:
    secret = 'pa"ss\\wörd-1'
    redact = Redactor([secret])
    document = {"error": f"auth failed: {secret}", "nested": [{secret: (secret,)}], "n": 1}
    text = json.dumps(redact.value(document))
    assert json.loads(text) == {"error": f"auth failed: {MASK}", "nested": [{MASK: [MASK]}],
                                "n": 1}  # fmt: skip
    # What redacting the serialised text instead would have missed:
    assert secret in json.loads(redact(json.dumps(document)))["error"]
