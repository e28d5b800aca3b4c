"""Keeping secrets out of what operators see: health bodies, metrics, CLI output, logs.

Two layers. Output names servers by `endpoint()` (host:port/database, never a URL with its
credentials). And everything the web process or an ops command prints passes through a
`Redactor` that replaces every configured secret value it finds (passwords of URLs and of
keyword DSNs, API keys, tokens) with `***`, so a password quoted back in a driver's error
message cannot leak either. JSON is redacted value by value before it is serialised (see
`Redactor.value`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

from notifier.config import Settings

MASK = "***"
_MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words


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


def plain(secret: Any) -> str | None:
    """The raw value of a `SecretStr` setting, or None when unset or empty."""
    if secret is None:
        return None
    return str(secret.get_secret_value()) or None


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
    """Replaces each known secret in a text with `***` (longest first, so a URL goes whole)."""

    def __init__(self, secrets: list[str]) -> None:
        usable = {s for s in secrets if len(s) >= _MIN_SECRET_LENGTH}
        self._secrets = sorted(usable, key=len, reverse=True)

    @classmethod
    def for_settings(cls, settings: Settings) -> Redactor:
        return cls(secret_values(settings))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
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
