"""SMS and WhatsApp through Twilio's Messages API, with errors sorted into retry-or-give-up.

The job id rides on the status-callback URL (`?job_id=...`), so every delivery report Twilio
posts back names its job. Classification is a pure function (`classify_twilio_error`) so the
same table can judge the error codes that arrive later in those status callbacks.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from notifier.errors import (
    ConfigError,
    DeliveryError,
    FailureLogStatus,
    PermanentDeliveryError,
    TransientDeliveryError,
    UnknownOutcomeError,
)
from notifier.log import quiet_sdk_loggers
from notifier.providers.addresses import is_e164
from notifier.providers.base import Message, ProviderReceipt, TextMessage
from notifier.providers.http import redacted, retry_after_seconds, status_phrase

MAX_BODY_CHARS = 1600
BODY_TOO_LONG_CODE = 21617  # Twilio's own code for "concatenated body exceeds 1600 characters"
_BOUNCED, _BLOCKED, _FAILED = (
    FailureLogStatus.BOUNCED,
    FailureLogStatus.BLOCKED,
    FailureLogStatus.FAILED,
)
# code -> (what happened, short phrase, how the delivery log records it). A bad number is a
# bounce, an opt-out is blocked. Codes 300xx mostly arrive in status callbacks.
PERMANENT_CODES: dict[int, tuple[str, str, FailureLogStatus]] = {
    21211: ("rejected the number", "invalid 'To' phone number", _BOUNCED),
    21610: ("will not send to this number", "the recipient replied STOP (unsubscribed)", _BLOCKED),
    21614: ("rejected the number", "'To' is not a mobile number", _BOUNCED),
    21635: ("rejected the number", "'To' is a landline", _BOUNCED),
    30005: ("could not deliver the message", "unknown destination handset", _BOUNCED),
    30006: ("could not deliver the message", "landline or unreachable carrier", _BOUNCED),
    30007: ("could not deliver the message", "filtered as spam by the carrier", _FAILED),
}
# Codes after which the number is suppressed (notification_suppressions), with the reason's
# words: an opt-out, or a number that can never receive. Whether on the send itself or in a
# status callback (notifier/feedback/twilio_status.py).
SUPPRESSING_CODES: dict[int, str] = {
    21610: "stop",
    21211: "invalid number",
    21614: "not a mobile number",
    30005: "unknown handset",
    30006: "landline or unreachable carrier",
}
TRANSIENT_CODES: dict[int, tuple[str, str]] = {
    20429: ("is rate limiting requests", "too many requests"),
    30001: ("could not deliver the message yet", "queue overflow"),
    30003: ("could not deliver the message yet", "destination handset unreachable"),
    30008: ("could not deliver the message yet", "unknown error from the carrier"),
    30036: ("could not deliver the message in time", "validity period expired"),
}
_NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
_HINTS = {
    401: "check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
    403: "check that the account may send from TWILIO_FROM_NUMBER",
}


class _HeaderKeepingHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """Keeps the last response per thread: `TwilioRestException` drops `Retry-After`."""

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._local = threading.local()

    def request(self, *args: Any, **kwargs: Any) -> Response:
        self._local.headers = None
        response: Response = super().request(*args, **kwargs)
        self._local.headers = response.headers
        return response

    def last_headers(self) -> Mapping[str, str] | None:
        headers: Mapping[str, str] | None = getattr(self._local, "headers", None)
        return headers


class TwilioProvider:
    """Sends a `TextMessage` with the official SDK; see the module docstring for the why."""

    name = "twilio"
    guarded_by_breaker = True

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        base_url: str = "https://api.twilio.com",
        status_callback_url: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not account_sid or not auth_token:
            raise ConfigError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must both be set")
        if not from_number and not messaging_service_sid:
            raise ConfigError("Set TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID")
        self._auth_token = auth_token
        self.account_sid = account_sid
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.base_url = base_url.rstrip("/")
        self.status_callback_url = status_callback_url
        self._http = _HeaderKeepingHttpClient(timeout=timeout)
        quiet_sdk_loggers()  # the SDK logs ~10 INFO lines per request
        self._client = Client(account_sid, auth_token, http_client=self._http)
        self._client.api.base_url = self.base_url
        # TWILIO_REGION / TWILIO_EDGE in the environment would rewrite the host (a loopback
        # base URL included); the base URL is the one place that decides where requests go.
        self._client.region = None
        self._client.edge = None

    def send(self, message: Message) -> ProviderReceipt:
        if not isinstance(message, TextMessage):
            raise PermanentDeliveryError(
                f"Twilio only sends SMS and WhatsApp, but job {message.job_id} is an email; "
                "route it to the email provider"
            )
        check_body(message.body)
        to = channel_address(message.to, message.channel)
        if not is_e164(to.removeprefix("whatsapp:")):
            raise PermanentDeliveryError(
                "The recipient's phone number is not in E.164 form (+, country code, number); "
                "fix the contact before sending",
                log_status=FailureLogStatus.BOUNCED,
            )
        params: dict[str, Any] = {
            "to": to,
            "body": message.body,
        }
        if self.from_number:
            params["from_"] = channel_address(self.from_number, message.channel)
        if self.messaging_service_sid:
            params["messaging_service_sid"] = self.messaging_service_sid
        if self.status_callback_url:
            params["status_callback"] = with_job_id(self.status_callback_url, message.job_id)
        try:
            created = self._client.api.v2010.account.messages.create(**params)
        except (TwilioRestException, TwilioServiceException) as exc:
            error = classify_twilio_error(
                exc.status,
                exc.code,
                _exception_text(exc),
                retry_after_seconds(self._http.last_headers()),
            )
            raise redacted(error, self._auth_token) from None
        except _NETWORK_ERRORS as exc:
            raise network_error(exc, self.base_url) from None
        return ProviderReceipt(
            provider=self.name,
            message_id=created.sid,
            response={"status": created.status, "channel": message.channel},
        )


def channel_address(number: str, channel: str) -> str:
    """`+E164` for SMS, `whatsapp:+E164` for WhatsApp (never prefixed twice)."""
    bare = number.strip().removeprefix("whatsapp:")
    return f"whatsapp:{bare}" if channel == "whatsapp" else bare


def network_error(exc: Exception, base_url: str) -> TransientDeliveryError:
    """No HTTP answer at all. Refused or timed out while connecting: nothing was sent, a plain
    retry. A read timeout or a connection dropped after the request was written: Twilio may
    have accepted the message, so the outcome is unknown."""
    host = urlsplit(base_url).netloc or base_url
    if request_never_sent(exc):
        what = "timed out" if isinstance(exc, requests.Timeout) else "the connection failed"
        return TransientDeliveryError(
            f"Could not reach Twilio at {host}: {what} ({type(exc).__name__})"
        )
    return UnknownOutcomeError(
        f"No answer from Twilio at {host} after sending ({type(exc).__name__}); "
        "it may or may not have accepted the message"
    )


def request_never_sent(exc: Exception) -> bool:
    """True when the error happened while connecting, before any byte of the request left."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and exc.args:
        reason = getattr(exc.args[0], "reason", None)
        return isinstance(reason, NewConnectionError | ConnectTimeoutError)
    return False


def check_body(body: str) -> None:
    """Guard: rendering truncates first, so a longer body here is a bug to surface, not send."""
    if len(body) > MAX_BODY_CHARS:
        raise PermanentDeliveryError(
            f"The message is {len(body):,} characters; Twilio accepts at most "
            f"{MAX_BODY_CHARS:,} ({BODY_TOO_LONG_CODE})",
            code=str(BODY_TOO_LONG_CODE),
        )
    if not body.strip():
        raise PermanentDeliveryError("The message body is empty; Twilio would reject it")


def with_job_id(url: str, job_id: str) -> str:
    """The callback URL with `job_id=<id>` added, keeping any query it already has."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "job_id"]
    query.append(("job_id", str(job_id)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def classify_twilio_error(
    status: int, code: int | None, detail: str | None = None, retry_after: float | None = None
) -> DeliveryError:
    """Sort a Twilio error into retry or give up, as a sentence with Twilio's code in it.

    429 / 20429 was never processed, so it is always safe to retry; 5xx says nothing about the
    message; some 300xx carrier codes are worth another try; every other 4xx is permanent.
    """
    twilio_code = _as_int(code)
    if twilio_code == status:  # the SDK fills in the HTTP status when the body has no code
        twilio_code = None
    if twilio_code in TRANSIENT_CODES:
        what, phrase = TRANSIENT_CODES[twilio_code]
        return TransientDeliveryError(
            f"Twilio {what}: {twilio_code} {phrase}", code=str(twilio_code), retry_after=retry_after
        )
    if status == 429 or status >= 500:
        text = f"Twilio answered {status} {status_phrase(status)}"
        if twilio_code is not None:
            text += f": {twilio_code} {detail or ''}".rstrip()
        return TransientDeliveryError(
            text, code=str(twilio_code or status), retry_after=retry_after
        )
    if twilio_code in PERMANENT_CODES:
        what, phrase, log_status = PERMANENT_CODES[twilio_code]
        return PermanentDeliveryError(
            f"Twilio {what}: {twilio_code} {phrase}",
            code=str(twilio_code),
            log_status=log_status,
            suppress=suppression_reason(twilio_code),
        )
    text = f"Twilio rejected the message ({status} {status_phrase(status)})"
    if twilio_code is not None or detail:
        text += ": " + " ".join(str(p) for p in (twilio_code, detail) if p)
    if status in _HINTS:
        text += f"; {_HINTS[status]}"
    return PermanentDeliveryError(text, code=str(twilio_code or status))


def suppression_reason(code: object) -> str | None:
    """`stop (21610)` for a code after which the number is suppressed, else None."""
    twilio_code = _as_int(code)
    if twilio_code not in SUPPRESSING_CODES:
        return None
    return f"{SUPPRESSING_CODES[twilio_code]} ({twilio_code})"


def _exception_text(exc: TwilioRestException | TwilioServiceException) -> str | None:
    if isinstance(exc, TwilioServiceException):
        return str(exc.detail or exc.title or "").strip() or None
    text = str(exc.msg or "").removeprefix("Unable to create record:").strip()
    return text[:300] or None


def _as_int(value: object) -> int | None:
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, str) and value.strip().isdigit() else None
