"""Keeping secrets out of what operators see: health bodies, metrics, CLI output, logs.

Structural, never by guessing. Output names servers by `endpoint()` (host:port/database, never
a URL with its credentials). Text that may quote a connection string (a driver's error, a log
line) passes through a `Redactor`, which masks the password of every URL it finds
(`scheme://user:***@`) and every `password=` value, whatever they are. It also masks configured
secrets found verbatim, but only long ones (API keys, tokens, long passwords): substituting a
short secret everywhere it appears would mask ordinary words (a password `postgres` turned the
database name in /health into `***`) and turn every answer that can echo input into an oracle
for guessing it. A `DATABASE_URL` libpq cannot parse is refused at start-up
(`config.check_database_url`), so a driver never quotes a fragment of it. `RedactionFilter`
applies the same to every log record of every process. JSON is redacted value by value before
it is serialised (see `Redactor.value`).
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

from notifier.config import Settings

MASK = "***"
# Secrets this long are masked wherever they appear verbatim: they cannot be guessed, so an
# answer that masks them reveals nothing. Shorter ones are masked only where they are
# recognisably a password (a URL's user info, `password=`).
MIN_VERBATIM_SECRET_LENGTH = 16
# `scheme://user:password@`: the password runs to the last `@` before whitespace, so one holding
# an unencoded `@` is masked whole.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@]*:)[^\s]*@")
_KEYWORD_PASSWORD = re.compile(
    r"(?P<head>\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&]+)",
    re.IGNORECASE,
)


def endpoint(url: str | None) -> str | None:
    """`host:port/db` of a connection URL (a socket path for unix URLs); None when unset."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if parts.scheme == "unix":
        return parts.path or None
    host = parts.hostname or "localhost"
    target = f"{host}:{port}" if port else host
    database = parts.path.lstrip("/")
    return f"{target}/{database}" if database else target


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold, raw and URL-decoded: passwords, keys, tokens."""
    found: list[str] = []
    for secret in (
        settings.database_url,
        settings.redis_url,
        settings.supabase_service_role_key,
        settings.sendgrid_api_key,
        settings.twilio_auth_token,
        settings.web_token,
    ):
        if secret is None:
            continue
        value = secret.get_secret_value()
        found.append(value)
        for password in _passwords(value):
            found += [password, unquote(password)]
    return found


def _passwords(dsn: str) -> list[str]:
    """The passwords a connection string holds: a URL's user info, its `?password=`, or a
    keyword DSN's `password=` (libpq's own parser reads the last two)."""
    found = []
    try:
        parts = urlsplit(dsn)
        if parts.password:
            found.append(parts.password)
        found += parse_qs(parts.query).get("password", [])
    except ValueError:
        pass
    try:
        password = conninfo_to_dict(dsn).get("password")
    except ProgrammingError:  # not a libpq connection string (a Redis URL, say)
        password = None
    if password:
        found.append(str(password))
    return found


class Redactor:
    """Masks URL passwords and `password=` values structurally, and long secrets verbatim."""

    def __init__(self, secrets: list[str]) -> None:
        usable = {s for s in secrets if len(s) >= MIN_VERBATIM_SECRET_LENGTH}
        self._secrets = sorted(usable, key=len, reverse=True)

    @classmethod
    def for_settings(cls, settings: Settings) -> Redactor:
        return cls(secret_values(settings))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:  # first: a URL found whole goes whole
            if secret in text:
                text = text.replace(secret, MASK)
        if "://" in text:
            text = _URL_PASSWORD.sub(rf"\g<head>{MASK}@", text)
        if "password" in text.lower():
            text = _KEYWORD_PASSWORD.sub(rf"\g<head>{MASK}", text)
        return text

    def value(self, data: Any) -> Any:
        """`data` with every string in it (keys too) redacted: for a document about to be
        serialised, where escaping could hide a secret from the text redaction."""
        if isinstance(data, str):
            return self(data)
        if isinstance(data, dict):
            return {self.value(k): self.value(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.value(item) for item in data]
        return data


class RedactionFilter(logging.Filter):
    """Redacts each record before any handler formats it: message, fields and traceback.

    Installed on the handler of every process (`log.configure`, and `rq_settings.DICT_CONFIG`
    for workers), so third-party records (psycopg-pool's warnings, RQ's own lines) pass it too.
    """

    def __init__(self, secrets: list[str] | None = None, name: str = "") -> None:
        super().__init__(name)
        self._redact = Redactor(secrets or [])

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redact(record.getMessage())
        record.args = None
        fields = getattr(record, "notifier_fields", None)
        if isinstance(fields, dict):
            record.notifier_fields = self._redact.value(fields)
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self._redact(text)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        return True
