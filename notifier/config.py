"""Settings from the environment, validated once at start-up and passed down.

Every variable is read here and nowhere else. A missing or malformed value raises `ConfigError`
with one line that names the variable, so a process stops before doing any work.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.connection import parse_url as parse_redis_url

from notifier.errors import ConfigError

# `NOTIFIER_*` variables that are not settings but are allowed in the environment: read by the
# shipped PM2 file (`ecosystem.config.js`), so every process it starts inherits them.
NOT_SETTINGS = frozenset({"NOTIFIER_BIN"})
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")

EmailProviderName = Literal["sendgrid", "console"]
BackendName = Literal["postgres", "supabase"]
SmsProviderName = Literal["twilio", "console"]


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    """notifier's whole configuration. The README table lists every field's variable."""

    # `inf` and `nan` are refused everywhere: an infinite interval means "never".
    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", populate_by_name=False, allow_inf_nan=False
    )

    database_url: SecretStr | None = Field(None, validation_alias=_env("DATABASE_URL"))
    redis_url: SecretStr | None = Field(None, validation_alias=_env("REDIS_URL"))
    supabase_url: str | None = Field(None, validation_alias=_env("SUPABASE_URL"))
    supabase_service_role_key: SecretStr | None = Field(
        None, validation_alias=_env("SUPABASE_SERVICE_ROLE_KEY")
    )
    # None: postgres when DATABASE_URL is set, else supabase when both Supabase keys are.
    backend: BackendName | None = Field(None, validation_alias=_env("NOTIFIER_BACKEND"))
    # Seconds one database call may take: the REST client's timeout (supabase-py's own default
    # is 120 s), so a hung API is noticed and retried instead of holding a worker.
    db_timeout: float = Field(30.0, gt=0, le=600, validation_alias=_env("NOTIFIER_DB_TIMEOUT"))

    email_provider: EmailProviderName | None = Field(
        None, validation_alias=_env("NOTIFIER_EMAIL_PROVIDER")
    )
    sms_provider: SmsProviderName | None = Field(
        None, validation_alias=_env("NOTIFIER_SMS_PROVIDER")
    )
    sendgrid_api_key: SecretStr | None = Field(None, validation_alias=_env("SENDGRID_API_KEY"))
    sendgrid_api_base: str = Field(
        "https://api.sendgrid.com", validation_alias=_env("SENDGRID_API_BASE")
    )
    email_from: str | None = Field(None, validation_alias=_env("EMAIL_FROM"))
    twilio_account_sid: str | None = Field(None, validation_alias=_env("TWILIO_ACCOUNT_SID"))
    twilio_auth_token: SecretStr | None = Field(None, validation_alias=_env("TWILIO_AUTH_TOKEN"))
    twilio_from_number: str | None = Field(None, validation_alias=_env("TWILIO_FROM_NUMBER"))
    twilio_messaging_service_sid: str | None = Field(
        None, validation_alias=_env("TWILIO_MESSAGING_SERVICE_SID")
    )
    twilio_api_base: str = Field("https://api.twilio.com", validation_alias=_env("TWILIO_API_BASE"))
    twilio_status_callback_url: str | None = Field(
        None, validation_alias=_env("TWILIO_STATUS_CALLBACK_URL")
    )
    unsubscribe_url_base: str | None = Field(None, validation_alias=_env("UNSUBSCRIBE_URL_BASE"))
    # Delivery feedback: the base64 public key of SendGrid's signed Event Webhook, and the
    # external base URL of `notifier web` (webhook and unsubscribe links are built from it).
    sendgrid_webhook_public_key: str | None = Field(
        None, validation_alias=_env("SENDGRID_WEBHOOK_PUBLIC_KEY")
    )
    public_url: str | None = Field(None, validation_alias=_env("NOTIFIER_PUBLIC_URL"))

    port: int = Field(8000, ge=1, le=65535, validation_alias=_env("PORT"))
    log_format: Literal["text", "json"] = Field("text", validation_alias=_env("LOG_FORMAT"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias=_env("LOG_LEVEL")
    )

    outbox_dir: Path | None = Field(None, validation_alias=_env("NOTIFIER_OUTBOX_DIR"))
    template_dir: Path | None = Field(None, validation_alias=_env("NOTIFIER_TEMPLATE_DIR"))
    poll_interval: float = Field(5.0, gt=0, validation_alias=_env("NOTIFIER_POLL_INTERVAL"))
    claim_batch_size: int = Field(
        500, ge=1, le=10000, validation_alias=_env("NOTIFIER_CLAIM_BATCH")
    )
    rq_job_size: int = Field(64, ge=1, le=1000, validation_alias=_env("NOTIFIER_RQ_JOB_SIZE"))
    max_in_flight: int = Field(5000, ge=1, validation_alias=_env("NOTIFIER_MAX_IN_FLIGHT"))
    max_queued_rq_jobs: int = Field(
        8, ge=1, validation_alias=_env("NOTIFIER_MAX_QUEUED_RQ_JOBS")
    )
    lease_seconds: int = Field(300, ge=2, validation_alias=_env("NOTIFIER_LEASE_SECONDS"))
    reaper_interval: float = Field(30.0, gt=0, validation_alias=_env("NOTIFIER_REAPER_INTERVAL"))
    digest_interval: float = Field(60.0, gt=0, validation_alias=_env("NOTIFIER_DIGEST_INTERVAL"))
    unknown_outcome: Literal["retry", "fail"] = Field(
        "retry", validation_alias=_env("NOTIFIER_UNKNOWN_OUTCOME")
    )
    # Sends in flight per worker process: 64 keeps ~200/s per process at 300 ms provider
    # latency, ~500/s at 100 ms (docs/performance.md). One RQ job's notifications share them.
    send_concurrency: int = Field(
        64, ge=1, le=256, validation_alias=_env("NOTIFIER_SEND_CONCURRENCY")
    )
    provider_timeout: float = Field(10.0, gt=0, validation_alias=_env("NOTIFIER_PROVIDER_TIMEOUT"))
    backoff_base_seconds: float = Field(30.0, gt=0, validation_alias=_env("NOTIFIER_BACKOFF_BASE"))
    backoff_cap_seconds: float = Field(3600.0, gt=0, validation_alias=_env("NOTIFIER_BACKOFF_CAP"))
    breaker_fail_max: int = Field(5, ge=1, validation_alias=_env("NOTIFIER_BREAKER_FAIL_MAX"))
    breaker_reset_timeout: int = Field(
        60, ge=1, validation_alias=_env("NOTIFIER_BREAKER_RESET_TIMEOUT")
    )
    # The database connections a worker process holds at most (+1), shared by its send threads.
    db_pool_size: int = Field(10, ge=1, le=200, validation_alias=_env("NOTIFIER_DB_POOL_SIZE"))
    # None: automatic (off on port 6543, Supabase's transaction pooler, which cannot keep them).
    prepared_statements: bool | None = Field(
        None, validation_alias=_env("NOTIFIER_DB_PREPARED_STATEMENTS")
    )

    # Operations: the web process (/health, /metrics) and its degraded thresholds.
    web_host: str = Field("0.0.0.0", validation_alias=_env("NOTIFIER_WEB_HOST"))
    # When set, /health/redis and /metrics need `Authorization: Bearer <token>`, and /health
    # without it shows only its status.
    web_token: SecretStr | None = Field(None, validation_alias=_env("NOTIFIER_WEB_TOKEN"))
    web_threads: int = Field(8, ge=1, le=64, validation_alias=_env("NOTIFIER_WEB_THREADS"))
    health_timeout: float = Field(
        0.8, gt=0, le=30, validation_alias=_env("NOTIFIER_HEALTH_TIMEOUT")
    )
    # How long one probe's answer serves other /health and /metrics requests.
    health_cache_seconds: float = Field(
        1.0, ge=0, le=60, validation_alias=_env("NOTIFIER_HEALTH_CACHE_SECONDS")
    )
    health_worker_stale_seconds: int = Field(
        480, ge=1, validation_alias=_env("NOTIFIER_HEALTH_WORKER_STALE_SECONDS")
    )
    health_max_backlog: int = Field(
        1000, ge=0, validation_alias=_env("NOTIFIER_HEALTH_MAX_BACKLOG")
    )
    health_max_failed_24h: int = Field(
        100, ge=0, validation_alias=_env("NOTIFIER_HEALTH_MAX_FAILED_24H")
    )
    health_max_due_age_seconds: int = Field(
        300, ge=1, validation_alias=_env("NOTIFIER_HEALTH_MAX_DUE_AGE_SECONDS")
    )
    metrics_window_seconds: int = Field(
        3600, ge=60, le=7 * 24 * 3600, validation_alias=_env("NOTIFIER_METRICS_WINDOW_SECONDS")
    )

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value.strip())
        plain_base = not (parts.query or parts.fragment)
        if parts.scheme not in ("http", "https") or not parts.netloc or not plain_base:
            raise ValueError(
                "it must be an http(s) URL without query, "
                "e.g. https://notifier.example.com"
            )
        return value.strip().rstrip("/")

    @field_validator("sendgrid_webhook_public_key")
    @classmethod
    def _check_public_key(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            key = load_der_public_key(base64.b64decode(value.strip(), validate=True))
        except (ValueError, binascii.Error, UnsupportedAlgorithm):
            key = None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError(
                "it must be the base64 ECDSA public "
                "key shown in SendGrid's Event Webhook settings"
            )
        return value.strip()

    @field_validator("database_url")
    @classmethod
    def _libpq_can_parse(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value():
            check_database_url(value.get_secret_value())
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_can_parse(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value():
            try:
                parse_redis_url(value.get_secret_value())  # type: ignore[no-untyped-call]
            except ValueError:
                # redis-py's message can quote a fragment of the password: never echo it.
                raise ValueError(
                    "expected redis://[:password@]host[:port][/db], rediss://… or unix://…, "
                    "with special characters in the password percent-encoded"
                ) from None
        return value

    @field_validator("web_host")
    @classmethod
    def _host_or_address(cls, value: str) -> str:
        check_host(value)
        return value

    @model_validator(mode="after")
    def _check_across_fields(self) -> Settings:
        if self.lease_seconds <= 3 * self.provider_timeout:
            raise ValueError(
                "NOTIFIER_LEASE_SECONDS must exceed three times NOTIFIER_PROVIDER_TIMEOUT, or a "
                "slow send could be re-claimed and sent twice"
            )
        if self.backoff_cap_seconds < self.backoff_base_seconds:
            raise ValueError("NOTIFIER_BACKOFF_CAP must be at least NOTIFIER_BACKOFF_BASE")
        if self.resolved_email_provider == "sendgrid":
            for name, value in (
                ("SENDGRID_API_KEY", self.sendgrid_api_key),
                ("EMAIL_FROM", self.email_from),
            ):
                if not value:
                    raise ValueError(
                        f"{name} is not set (needed by NOTIFIER_EMAIL_PROVIDER=sendgrid)"
                    )
        if self.resolved_sms_provider == "twilio":
            credentials = (
                ("TWILIO_ACCOUNT_SID", self.twilio_account_sid),
                ("TWILIO_AUTH_TOKEN", self.twilio_auth_token),
            )
            given = [name for name, value in credentials if value]
            for name, value in credentials:
                if not value:
                    because = f"{given[0]} is set" if given else "NOTIFIER_SMS_PROVIDER=twilio"
                    raise ValueError(
                        f"{name} is not set ({because}): set it, or "
                        "NOTIFIER_SMS_PROVIDER=console to print text messages instead of "
                        "sending them"
                    )
            if not (self.twilio_from_number or self.twilio_messaging_service_sid):
                raise ValueError(
                    "TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID is not set "
                    "(needed by NOTIFIER_SMS_PROVIDER=twilio)"
                )
        return self

    @property
    def rq_job_timeout(self) -> int:
        """Seconds an RQ job (one batch) may run before RQ stops it: every send of the batch,
        in waves of NOTIFIER_SEND_CONCURRENCY, at twice the provider timeout plus margins."""
        waves = -(-self.rq_job_size // self.send_concurrency)
        return int(waves * (2 * self.provider_timeout + 5) + 60)

    @property
    def resolved_status_callback_url(self) -> str | None:
        """TWILIO_STATUS_CALLBACK_URL, or notifier's own webhook under NOTIFIER_PUBLIC_URL."""
        if self.twilio_status_callback_url:
            return self.twilio_status_callback_url
        return f"{self.public_url}/webhooks/twilio" if self.public_url else None

    @property
    def resolved_unsubscribe_url_base(self) -> str | None:
        """UNSUBSCRIBE_URL_BASE, or notifier's own unsubscribe page under NOTIFIER_PUBLIC_URL."""
        if self.unsubscribe_url_base:
            return self.unsubscribe_url_base
        return f"{self.public_url}/unsubscribe" if self.public_url else None

    @property
    def resolved_email_provider(self) -> EmailProviderName | None:
        """NOTIFIER_EMAIL_PROVIDER, or SendGrid when its key is set; None when neither is.

        Never console by default: a worker that silently printed emails would record them as
        sent. Console is chosen explicitly, or by `notifier dev`."""
        if self.email_provider:
            return self.email_provider
        return "sendgrid" if self.sendgrid_api_key else None

    @property
    def resolved_sms_provider(self) -> SmsProviderName | None:
        """NOTIFIER_SMS_PROVIDER, or Twilio when any Twilio credential is set (a partial set is
        an error naming the missing one); None when neither is."""
        if self.sms_provider:
            return self.sms_provider
        return "twilio" if self.twilio_account_sid or self.twilio_auth_token else None

    def missing_providers(self) -> dict[str, str]:
        """Each channel (`email`, `sms`: SMS and WhatsApp) that has no provider, with one line
        saying how to give it one. Console is never the fallback: a worker that printed
        messages would record them as sent."""
        missing = {}
        if self.resolved_email_provider is None:
            missing["email"] = (
                "SENDGRID_API_KEY is not set: set it (with EMAIL_FROM), or "
                "NOTIFIER_EMAIL_PROVIDER=console to print emails instead of sending them"
            )
        if self.resolved_sms_provider is None:
            missing["sms"] = (
                "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not set: set them (with "
                "TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID), or "
                "NOTIFIER_SMS_PROVIDER=console to print text messages instead of sending them"
            )
        return missing

    def require_providers(self) -> tuple[EmailProviderName | None, SmsProviderName | None]:
        """The email and SMS providers a worker sends with (None: that channel has none, and
        its jobs fail with a readable reason). A `ConfigError` naming the variables when no
        channel has one: such a worker could send nothing. Only processes that send call
        this, so `migrate`, `status`, `web` and the others run without provider credentials."""
        missing = self.missing_providers()
        if len(missing) == 2:
            raise ConfigError("; ".join(missing.values()))
        return self.resolved_email_provider, self.resolved_sms_provider

    def require_database_url(self) -> str:
        if self.database_url is None or not self.database_url.get_secret_value():
            raise ConfigError("DATABASE_URL is not set")
        return self.database_url.get_secret_value()

    @property
    def resolved_backend(self) -> BackendName | None:
        """NOTIFIER_BACKEND, else postgres when DATABASE_URL is set (direct Postgres wins when
        both are), else supabase when SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are set."""
        if self.backend:
            return self.backend
        if plain_secret(self.database_url):
            return "postgres"
        if self.supabase_url and plain_secret(self.supabase_service_role_key):
            return "supabase"
        return None

    def require_backend(self) -> BackendName:
        """The backend a process talks to; a `ConfigError` naming what is missing."""
        backend = self.resolved_backend
        if backend is None:
            raise ConfigError(
                "DATABASE_URL is not set, nor SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY: set "
                "DATABASE_URL (direct PostgreSQL), or both Supabase variables (the REST API)"
            )
        if backend == "postgres":
            self.require_database_url()
        else:
            self.require_supabase()
        return backend

    def require_supabase(self) -> tuple[str, str]:
        """SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY, for the REST backend."""
        key = plain_secret(self.supabase_service_role_key)
        given = (("SUPABASE_URL", self.supabase_url), ("SUPABASE_SERVICE_ROLE_KEY", key))
        missing = [name for name, value in given if not value]
        if missing:
            raise ConfigError(
                f"{' and '.join(missing)} not set (needed by NOTIFIER_BACKEND=supabase)"
            )
        assert self.supabase_url is not None and key is not None
        return self.supabase_url, key

    def require_redis_url(self) -> str:
        if self.redis_url is None or not self.redis_url.get_secret_value():
            raise ConfigError("REDIS_URL is not set")
        return self.redis_url.get_secret_value()


def load_settings(**overrides: object) -> Settings:
    """Read the environment; `overrides` (field names) win, for `notifier dev` and tests."""
    by_variable = {_variable(name): value for name, value in overrides.items()}
    check_no_unknown_names(os.environ)
    try:
        return Settings(**by_variable)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _variable(field_name: str) -> str:
    """The environment variable a settings field is read from (its only alias)."""
    alias = Settings.model_fields[field_name].validation_alias
    assert isinstance(alias, AliasChoices), field_name
    return str(alias.choices[0])


def known_names() -> frozenset[str]:
    """Every variable a `Settings` field is read from: settings added later count at once."""
    return frozenset(_variable(name) for name in Settings.model_fields)


def check_no_unknown_names(environ: dict[str, str] | os._Environ[str]) -> None:
    """A `NOTIFIER_*` variable that no setting reads is a mistake (a typo silently ignored
    would leave the default in force): refuse it, suggesting the closest real name."""
    known = known_names()
    for name in sorted(environ):
        if not name.startswith("NOTIFIER_") or name in known or name in NOT_SETTINGS:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else " (see the README settings table)"
        raise ConfigError(f"{name} is not a notifier setting{hint}")


def check_database_url(url: str) -> None:
    """Refuse a DATABASE_URL libpq cannot parse, or parses differently than it reads.

    libpq's own error quotes the offending fragment, which for an unencoded `%`, `@` or `/` is
    part of the password; so the message here never quotes the URL. An unencoded `@` in a
    URL's password parses "successfully" into a host holding the rest of the password, which
    the connection error would then print: refused as well.
    """
    advice = (
        "libpq cannot read it as a connection URL or key=value string; percent-encode special "
        "characters in the user and password (% as %25, @ as %40, / as %2F, : as %3A)"
    )
    try:
        parsed = conninfo_to_dict(url)
    except ProgrammingError:
        raise ValueError(advice) from None
    hosts = str(parsed.get("host") or "").split(",")
    if any("@" in host or (host and "/" in host and not host.startswith("/")) for host in hosts):
        raise ValueError(advice)
    ports = str(parsed.get("port") or "").split(",")
    if any(port and not port.isdigit() for port in ports):
        raise ValueError(advice)


def check_host(host: str) -> None:
    """An IP address or a syntactically valid host name (`256.1.1.1` is neither)."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    looks_numeric = all(label.isdigit() for label in labels)
    if looks_numeric or len(host) > 253 or not all(_HOST_LABEL.match(x) for x in labels):
        raise ValueError("expected an IP address (0.0.0.0, ::) or a host name")


def _describe(exc: ValidationError) -> str:
    error = exc.errors()[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:
        return message
    variable = str(error["loc"][0])
    return f"{variable} is malformed: {message}"


def plain_secret(value: SecretStr | None) -> str | None:
    """The secret's text, or None when unset or empty."""
    return value.get_secret_value() or None if value is not None else None


def mask_url(url: str) -> str:
    """The URL without its password, for logs and health output: `redis://:***@host:6379/0`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))
