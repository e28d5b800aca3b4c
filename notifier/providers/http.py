"""What every HTTP provider needs the same way: reading headers, naming a status, keeping
secrets out of errors, and keeping the SDKs' own loggers quiet.

The SDKs' loggers are quietened by the one table in `notifier.log` (`quiet_sdk_loggers`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import TypeVar

from notifier.errors import DeliveryError

E = TypeVar("E", bound=DeliveryError)

def retry_after_seconds(
    headers: Mapping[str, str] | None, *, now: float | None = None
) -> float | None:
    """Seconds to wait, from `Retry-After` (seconds or HTTP date) or `X-RateLimit-Reset` (epoch)."""
    if not headers:
        return None
    current = time.time() if now is None else now
    retry_after = header(headers, "Retry-After")
    if retry_after:
        value = retry_after.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - current)
        except (TypeError, ValueError):
            pass
    reset = header(headers, "X-RateLimit-Reset")
    if reset:
        try:
            return max(0.0, float(reset.strip()) - current)
        except ValueError:
            return None
    return None


def status_phrase(status: int) -> str:
    """`Service Unavailable` for 503, so an error message reads without a lookup table."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "(unknown status)"


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """Case-insensitive lookup that also works on a plain dict (SDKs hand back either)."""
    if not headers:
        return None
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    return value


def redacted(error: E, secret: str) -> E:
    """Belt and braces: a secret must never reach a log line, even if an error body echoed it."""
    if secret and secret in error.message:
        error.message = error.message.replace(secret, "[redacted]")
        error.args = (error.message,)
    return error
