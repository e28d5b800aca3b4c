"""Email through SendGrid's v3 Mail Send API, with errors sorted into retry-or-give-up.

The job id travels in `personalizations[0].custom_args` (the official spec types the top-level
`custom_args` as a string), so every event-webhook event can be traced back to its job. A 202
means SendGrid accepted (queued) the message, not that it was delivered.

The body is built by the official helper (`sendgrid.helpers.mail.Mail`), but it is posted
through one kept-alive, pooled `requests.Session` per provider (so per worker process): the
SDK's own client (python_http_client on urllib) opens a new connection, in production a new TLS
handshake, for every email.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from typing import Any
from urllib.error import URLError
from urllib.parse import urlsplit

import requests
import sendgrid
import urllib3
from requests.adapters import HTTPAdapter
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
MAIL_SEND_PATH = "/v3/mail/send"
# What the SDK's own client sends as User-Agent, so SendGrid sees the same client.
USER_AGENT = f"sendgrid/{sendgrid.__version__};python"


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
        pool_size: int = 10,
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
        self.timeout = timeout  # always passed: without one a request could wait forever
        self._url = self.base_url + MAIL_SEND_PATH
        self._session = pooled_session(api_key, pool_size, self._url)
        # URL, headers and hooks merged with the session's once, not on every send: requests'
        # `Session.request` re-merges them per call (protocol isinstance checks, URL parsing),
        # a measurable share of a worker's CPU per email. Each send copies this and sets its
        # body, as `session.post(url, data=body)` would, except that cookies a response set are
        # not sent back (the Mail Send API is stateless and authenticates by the key alone).
        self._template = self._session.prepare_request(requests.Request("POST", self._url))
        quiet_sdk_loggers()  # python_http_client logs the Authorization header at DEBUG

    def close(self) -> None:
        self._session.close()

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
            body = json.dumps(payload).encode()
            response = self._session.send(self._request(body), timeout=self.timeout)
        except ApiKeyIncludedException:
            # The SDK refuses a body that *starts* with something shaped like "SG.x.y".
            raise PermanentDeliveryError(
                "SendGrid's library refused to send: the email body starts with text that looks "
                "like a SendGrid API key; check the template"
            ) from None
        except (OSError, http.client.HTTPException) as exc:  # requests' errors are OSErrors
            raise redacted(classify_network_error(exc, self.base_url), self._api_key) from None
        if response.status_code >= 400:
            error = classify_http_error(response.status_code, response.content, response.headers)
            raise redacted(error, self._api_key)
        message_id = header(response.headers, "X-Message-Id")
        return ProviderReceipt(
            provider=self.name,
            message_id=message_id,
            response={"status": response.status_code, "sandbox": self.sandbox},
        )


    def _request(self, body: bytes) -> requests.PreparedRequest:
        """The POST for one body: a copy of the prepared template with its own body and
        Content-Length (the template itself never changes, so threads may share it)."""
        request = self._template.copy()
        request.prepare_body(body, None)
        return request


def pooled_session(api_key: str, pool_size: int, url: str) -> requests.Session:
    """Kept-alive connections, up to `pool_size` at once (one per concurrent send), never
    retried by the transport: a retry after the request was written could duplicate the email.

    The environment's proxy and CA-bundle settings (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE,
    ...) are read once here instead of on every request, where requests re-reads them (and
    looks for ~/.netrc) each time."""
    session = requests.Session()
    environment = session.merge_environment_settings(url, {}, None, None, None)
    session.trust_env = False
    session.proxies.update(environment.get("proxies") or {})
    session.verify = environment.get("verify", True)
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(1, pool_size), max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers.update(
        {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
    )
    return session


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
    """A request that got no HTTP answer. An error of the connect phase (refused, no such host,
    connect timeout; urllib's `URLError`) means nothing was sent: a plain retry. Anything raised
    later (a read timeout, a reset or a disconnect after the request was written) may follow an
    accepted message, so its outcome is unknown."""
    reason = _reason(exc)
    kind = type(reason).__name__
    text = str(reason).strip() or kind
    if isinstance(reason, TimeoutError) or isinstance(exc, requests.Timeout):
        text = "timed out"
    host = urlsplit(base_url).netloc or base_url
    if _before_sending(exc):
        return TransientDeliveryError(f"Could not reach SendGrid at {host}: {text} ({kind})")
    return UnknownOutcomeError(
        f"No answer from SendGrid at {host} after sending: {text} ({kind}); "
        "it may or may not have accepted the email"
    )


def _before_sending(exc: BaseException) -> bool:
    """Whether the error came before any byte of the request left (so a retry is safe)."""
    if isinstance(exc, URLError | requests.exceptions.ConnectTimeout):
        return True
    return isinstance(exc, requests.ConnectionError) and isinstance(
        _reason(exc), urllib3.exceptions.NewConnectionError
    )


def _reason(exc: BaseException) -> BaseException:
    """The error underneath the wrappers (urllib's `URLError`, requests' `MaxRetryError`)."""
    if isinstance(exc, URLError) and isinstance(exc.reason, BaseException):
        return exc.reason
    inner = exc.args[0] if exc.args else None
    if isinstance(inner, urllib3.exceptions.MaxRetryError) and inner.reason is not None:
        return inner.reason
    if isinstance(inner, urllib3.exceptions.ProtocolError) and len(inner.args) > 1:
        cause = inner.args[1]
        return cause if isinstance(cause, BaseException) else exc
    return exc


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
