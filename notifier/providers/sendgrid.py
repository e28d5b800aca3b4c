"""Email through SendGrid's v3 Mail Send API, with errors sorted into retry-or-give-up.

The job id travels in `personalizations[0].custom_args` (the official spec types the top-level
`custom_args` as a string), so every event-webhook event can be traced back to its job. A 202
means SendGrid accepted (queued) the message, not that it was delivered.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from typing import Any
from urllib.error import URLError
from urllib.parse import urlsplit

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    ApiKeyIncludedException,
    CustomArg,
    Header,
    Mail,
    MailSettings,
    SandBoxMode,
    To,
)

from notifier.errors import (
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
    UnknownOutcomeError,
)
from notifier.log import quiet_sdk_loggers
from notifier.providers.base import EmailMessage, Message, ProviderReceipt
from notifier.providers.http import header, redacted, retry_after_seconds, status_phrase

# 429 and 5xx gateway/overload answers say nothing about the message itself.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_HINTS = {
    401: "check SENDGRID_API_KEY",
    403: "check that SENDGRID_API_KEY may send mail and that EMAIL_FROM is a verified sender",
    413: "the message is larger than SendGrid's 30 MB limit",
}
_MAX_DETAIL = 300


class SendGridProvider:
    """Sends an `EmailMessage` with the official SDK; see the module docstring for the why."""

    name = "sendgrid"
    guarded_by_breaker = True

    def __init__(
        self,
        api_key: str,
        from_email: str,
        *,
        from_name: str | None = None,
        base_url: str = "https://api.sendgrid.com",
        timeout: float = 10.0,
        sandbox: bool = False,
    ) -> None:
        if not api_key:
            raise ConfigError("SENDGRID_API_KEY is empty; SendGrid needs an API key to send email")
        if not from_email:
            raise ConfigError("EMAIL_FROM is empty; SendGrid needs a verified sender address")
        self._api_key = api_key
        self.from_email = from_email
        self.from_name = from_name
        self.base_url = base_url.rstrip("/")
        self.sandbox = sandbox
        self._client = SendGridAPIClient(api_key=api_key, host=self.base_url)
        self._client.client.timeout = timeout  # the SDK has no default: it would wait forever
        quiet_sdk_loggers()  # python_http_client logs the Authorization header at DEBUG

    def send(self, message: Message) -> ProviderReceipt:
        if not isinstance(message, EmailMessage):
            raise PermanentDeliveryError(
                f"SendGrid only sends email, but job {message.job_id} is a {message.channel} "
                "message; route it to the SMS provider"
            )
        try:
            payload = build_payload(
                message, self.from_email, from_name=self.from_name, sandbox=self.sandbox
            )
            response = self._client.send(payload)
        except HTTPError as exc:
            error = classify_http_error(exc.status_code, exc.body, exc.headers)
            raise redacted(error, self._api_key) from None
        except ApiKeyIncludedException:
            # The SDK refuses a body that *starts* with something shaped like "SG.x.y".
            raise PermanentDeliveryError(
                "SendGrid's library refused to send: the email body starts with text that looks "
                "like a SendGrid API key; check the template"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise redacted(classify_network_error(exc, self.base_url), self._api_key) from None
        message_id = header(response.headers, "X-Message-Id")
        return ProviderReceipt(
            provider=self.name,
            message_id=message_id,
            response={"status": response.status_code, "sandbox": self.sandbox},
        )


def build_payload(
    message: EmailMessage, from_email: str, *, from_name: str | None = None, sandbox: bool = False
) -> dict[str, Any]:
    """The `POST /v3/mail/send` body for one message (text part first, as SendGrid requires)."""
    mail = Mail(
        from_email=(from_email, from_name) if from_name else from_email,
        to_emails=To(message.to, message.to_name),
        subject=message.subject,
        plain_text_content=message.text or None,
        html_content=message.html or None,
    )
    for name, value in message.headers.items():
        mail.header = Header(name, value)
    # p=0: the personalization's custom_args, which the spec types as an object of strings.
    mail.custom_arg = CustomArg("job_id", str(message.job_id), p=0)
    if sandbox:
        mail.mail_settings = MailSettings(sandbox_mode=SandBoxMode(True))
    payload: dict[str, Any] = mail.get()
    return payload


def classify_http_error(
    status: int,
    body: bytes | str | None,
    headers: Mapping[str, str] | None,
    *,
    now: float | None = None,
) -> DeliveryError:
    """Sort a non-2xx answer into retry (429, 5xx) or give up (other 4xx), in words."""
    phrase = status_phrase(status)
    detail = first_error_message(body)
    if status in TRANSIENT_STATUSES or status >= 500:
        text = f"SendGrid answered {status} {phrase}"
        return TransientDeliveryError(
            f"{text}: {detail}" if detail else text,
            code=str(status),
            retry_after=retry_after_seconds(headers, now=now),
        )
    text = f"SendGrid rejected the email ({status} {phrase})"
    if detail:
        text += f": {detail}"
    if status in _HINTS:
        text += f"; {_HINTS[status]}"
    return PermanentDeliveryError(text, code=str(status))


def classify_network_error(exc: BaseException, base_url: str) -> TransientDeliveryError:
    """A request that got no HTTP answer. urllib wraps errors of the connect phase in
    `URLError` (nothing was sent: a plain retry); anything raised later (a read timeout, a reset
    or a disconnect after the request was written) may follow an accepted message, so its
    outcome is unknown."""
    reason: object = exc.reason if isinstance(exc, URLError) else exc
    kind = type(reason).__name__
    text = str(reason).strip() or kind
    if isinstance(reason, TimeoutError):
        text = "timed out"
    host = urlsplit(base_url).netloc or base_url
    if isinstance(exc, URLError):
        return TransientDeliveryError(f"Could not reach SendGrid at {host}: {text} ({kind})")
    return UnknownOutcomeError(
        f"No answer from SendGrid at {host} after sending: {text} ({kind}); "
        "it may or may not have accepted the email"
    )


def first_error_message(body: bytes | str | None) -> str | None:
    """The first `errors[].message` of a SendGrid error body, prefixed with its field."""
    if not body:
        return None
    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        parsed = json.loads(raw)
    except ValueError:
        return raw.strip()[:_MAX_DETAIL] or None
    errors = parsed.get("errors") if isinstance(parsed, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None
    first = errors[0]
    message = str(first.get("message") or "").strip()
    field = first.get("field")
    if field and message:
        message = f"{field}: {message}"
    return message[:_MAX_DETAIL] or None
