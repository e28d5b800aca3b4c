"""Settings from the environment, validated once at start-up and passed down.

Every variable is read here and nowhere else. A missing or malformed value raises `ConfigError`
with one line that names the variable, so a process stops before doing any work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from notifier.errors import ConfigError

EmailProviderName = Literal["sendgrid", "console"]
SmsProviderName = Literal["twilio", "console"]


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    """notifier's whole configuration. The README table lists every field's variable."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=False)

    database_url: SecretStr | None = Field(None, validation_alias=_env("DATABASE_URL"))
    redis_url: SecretStr | None = Field(None, validation_alias=_env("REDIS_URL"))
    supabase_url: str | None = Field(None, validation_alias=_env("SUPABASE_URL"))
    supabase_service_role_key: SecretStr | None = Field(
        None, validation_alias=_env("SUPABASE_SERVICE_ROLE_KEY")
    )

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

    def require_providers(self) -> tuple[EmailProviderName, SmsProviderName]:
        """The email and SMS providers a worker sends with; a `ConfigError` (one line naming
        the variables) when a channel has none. Only processes that send call this, so
        `migrate`, `status`, `web` and the others run without provider credentials."""
        email, sms = self.resolved_email_provider, self.resolved_sms_provider
        missing = []
        if email is None:
            missing.append(
                "SENDGRID_API_KEY is not set: set it (with EMAIL_FROM), or "
                "NOTIFIER_EMAIL_PROVIDER=console to print emails instead of sending them"
            )
        if sms is None:
            missing.append(
                "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not set: set them (with "
                "TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID), or "
                "NOTIFIER_SMS_PROVIDER=console to print text messages instead of sending them"
            )
        if email is None or sms is None:
            raise ConfigError("; ".join(missing))
        return email, sms

    def require_database_url(self) -> str:
        if self.database_url is None or not self.database_url.get_secret_value():
            raise ConfigError("DATABASE_URL is not set")
        return self.database_url.get_secret_value()

    def require_redis_url(self) -> str:
        if self.redis_url is None or not self.redis_url.get_secret_value():
            raise ConfigError("REDIS_URL is not set")
        return self.redis_url.get_secret_value()


def load_settings(**overrides: object) -> Settings:
    """Read the environment; `overrides` (field names) win, for `notifier dev` and tests."""
    by_variable = {_variable(name): value for name, value in overrides.items()}
    try:
        return Settings(**by_variable)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _variable(field_name: str) -> str:
    """The environment variable a settings field is read from (its only alias)."""
    alias = Settings.model_fields[field_name].validation_alias
    assert isinstance(alias, AliasChoices), field_name
    return str(alias.choices[0])


def _describe(exc: ValidationError) -> str:
    error = exc.errors()[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "value_error" or not error["loc"]:
        return message
    variable = str(error["loc"][0])
    return f"{variable} is malformed: {message}"


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
