"""One error tree, so callers can catch what they mean and messages read as sentences."""

from __future__ import annotations

from enum import StrEnum


class NotifierError(Exception):
    """Base of every error notifier raises on purpose."""


class ConfigError(NotifierError):
    """A setting is missing or malformed; the message names the variable."""


class DeliveryError(NotifierError):
    """A delivery attempt did not succeed.

    `code` is the provider's own error code (Twilio `21211`, HTTP `400`, ...) when one exists,
    so the delivery log can carry it next to the readable message.
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class TransientDeliveryError(DeliveryError):
    """Worth retrying later: timeouts, connection errors, 429 and 5xx.

    `retry_after` (seconds) is the provider's own hint (`Retry-After`, `X-RateLimit-Reset`),
    honoured instead of the computed backoff when it is longer.
    """

    def __init__(
        self, message: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class UnknownOutcomeError(TransientDeliveryError):
    """The request may have reached the provider, but no answer came back (a read timeout, a
    connection dropped after the request was written). Sending again may duplicate, so it is
    recorded as an unknown outcome (NOTIFIER_UNKNOWN_OUTCOME), not as a plain retry. It still
    counts as a provider failure for the circuit breaker."""


class FailureLogStatus(StrEnum):
    """How a permanent failure reads in the delivery log (`fail_notification_job`'s
    `p_log_status`), so a bad address or an opt-out can be told from any other refusal."""

    FAILED = "failed"
    BOUNCED = "bounced"  # the address is bad: fix the contact before sending again
    BLOCKED = "blocked"  # the recipient opted out at the provider (an SMS STOP)


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help: bad address, rejected request, template error, no contact.

    Whoever classifies the failure (the provider, or delivery for a missing contact) also says
    how the delivery log records it, so no one else needs to know provider error codes.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        log_status: FailureLogStatus = FailureLogStatus.FAILED,
        suppress: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.log_status = log_status
        # Why the address must never be sent to again (`stop (21610)`), when the provider's
        # answer says so: delivery then adds it to the suppression list.
        self.suppress = suppress

    @property
    def bad_address(self) -> bool:
        """The recipient's address itself was rejected (the contact needs fixing)."""
        return self.log_status is FailureLogStatus.BOUNCED


class TemplateRenderError(PermanentDeliveryError):
    """A template failed to render (unknown template, missing variable)."""

    def __init__(self, message: str, *, code: str | None = "TEMPLATE_ERROR") -> None:
        super().__init__(message, code=code)


class StoreError(NotifierError):
    """The database (directly, or through the Supabase REST API) refused or failed a call.

    `code` is PostgREST's or Postgres's own code (`PGRST202`, `P0001`, `503`) when one exists.
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class StoreUnavailableError(StoreError):
    """Transient: the REST API answered 503 (or 502/504/520), timed out, or could not be
    reached. The poller, the scheduler and the workers back off and go on; nothing is lost,
    since Postgres holds every job and leases bring claimed ones back."""


class StoreAuthError(StoreError):
    """The key was refused (401/403): no retry can help, so a process stops at start-up."""


class StoreFunctionMissingError(StoreError):
    """The function is not in the API's schema cache (404 PGRST202): a migration is missing,
    or PostgREST has not reloaded its schema since it ran."""
