"""No secret in what operators see: endpoints instead of URLs, and every secret masked."""

from __future__ import annotations

import json

import pytest

from notifier.config import load_settings
from notifier.redaction import MASK, Redactor, endpoint


def test_endpoint_is_host_port_and_database_only() -> None:
    assert endpoint("redis://:p%40ss@cache.internal:6380/2") == "cache.internal:6380/2"
    assert endpoint("postgresql://app:secret@db.example.com:5432/app") == "db.example.com:5432/app"
    assert endpoint("rediss://default:pw@redis.example.com") == "redis.example.com"
    assert endpoint("unix:///var/run/redis.sock") == "/var/run/redis.sock"
    assert endpoint(None) is None


def test_url_passwords_are_masked_whatever_they_are() -> None:
    redact = Redactor([])
    assert redact("at postgresql://app:pg%2Fsecret@db:5432/app;") == (
        "at postgresql://app:***@db:5432/app;"
    )
    # An unencoded `@` in the password: masked whole, not up to the first `@`.
    assert redact("redis://:p@ss@cache:6379/0 and a@b.com") == "redis://:***@cache:6379/0 and a@b.com"
    assert redact("https://user@host/path") == "https://user@host/path"


def test_long_configured_secrets_are_masked_verbatim_short_ones_are_not() -> None:
    settings = load_settings(
        database_url="postgresql://postgres:postgres@db:5432/postgres",
        email_provider="sendgrid", sendgrid_api_key="SG.key-1234567890abcdef",
        email_from="n@example.com", sms_provider="console",
    )  # fmt: skip
    redact = Redactor.for_settings(settings)
    assert redact("key SG.key-1234567890abcdef refused") == "key *** refused"
    # A common-word password is not substituted into ordinary text (nor is its database name).
    assert redact('database "postgres" component="postgres"') == (
        'database "postgres" component="postgres"'
    )
    assert redact("postgresql://postgres:postgres@db:5432/postgres") == MASK  # the whole URL
    assert redact("postgresql://postgres:postgres@db:6543/postgres") == (
        "postgresql://postgres:***@db:6543/postgres"
    )


def test_short_values_are_not_substituted() -> None:
    assert Redactor(["ab", "a-long-secret-0123"])("ab a-long-secret-0123") == "ab ***"


def test_password_keywords_are_masked() -> None:
    redact = Redactor([])
    assert redact("host=db password='kw-Pass\\'9' user=app") == "host=db password=*** user=app"
    assert redact("postgresql://app@db/app?password=query%40Pass1&sslmode=require") == (
        "postgresql://app@db/app?password=***&sslmode=require"
    )


def test_the_log_filter_redacts_message_fields_and_traceback() -> None:
    import logging

    from notifier.redaction import RedactionFilter

    try:
        raise RuntimeError("connect to postgresql://app:hunter2@db/app failed")
    except RuntimeError:
        import sys

        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "psycopg.pool", logging.WARNING, __file__, 1,
        "error connecting in %r: %s", ("pool", "redis://:hunter2@cache/0"), exc_info,
    )  # fmt: skip
    record.notifier_fields = {"url": "postgresql://app:hunter2@db/app"}
    assert RedactionFilter([]).filter(record)
    rendered = logging.Formatter().format(record)
    assert "hunter2" not in rendered and "***" in rendered
    assert "hunter2" not in str(record.notifier_fields)


def test_values_are_redacted_before_serialisation() -> None:
    secret = 'pa"ss\\wörd-1-0123456789'
    redact = Redactor([secret])
    document = {"error": f"auth failed: {secret}", "nested": [{secret: (secret,)}], "n": 1}
    text = json.dumps(redact.value(document))
    assert json.loads(text) == {"error": f"auth failed: {MASK}", "nested": [{MASK: [MASK]}],
                                "n": 1}  # fmt: skip
    # What redacting the serialised text instead would have missed:
    assert secret in json.loads(redact(json.dumps(document)))["error"]


def test_a_failed_rq_job_keeps_no_password_in_its_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RQ stores a failed job's traceback in Redis for 7 days."""
    from notifier.pipeline import tasks

    class Exploding:
        def deliver_batch(self, claims: object) -> None:
            raise RuntimeError("could not connect to postgresql://app:hunter2@db/app")

    monkeypatch.setattr(tasks, "_current_deliverer", lambda: Exploding())
    with pytest.raises(tasks.BatchFailed) as failed:
        tasks.deliver_batch([["j", "t"]])
    assert "hunter2" not in str(failed.value) and "RuntimeError" in str(failed.value)
    assert failed.value.__suppress_context__  # RQ prints no chained original
