"""Deliver one batch of claimed jobs: start (fenced) → skip? → render → breaker → send → record.

Every outcome is recorded through one SQL function (complete, retry, fail, skip, defer), right
after its provider call (successes through recorder.py, which groups those that finish
together into one call), so a lost worker leaves at most the jobs in hand with an unknown
outcome. Nothing here raises for a bad job: a malformed job fails with a readable reason and
the worker goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rq.timeouts import BaseTimeoutException

from notifier.errors import (
    FailureLogStatus,
    PermanentDeliveryError,
    TransientDeliveryError,
    UnknownOutcomeError,
)
from notifier.log import event
from notifier.pipeline.breaker import CircuitOpenError, ProviderBreaker
from notifier.pipeline.outcomes import RECORDED_EVENTS, Outcome, counts, log_level
from notifier.pipeline.recorder import SuccessRecorder
from notifier.pipeline.render import Renderer, list_unsubscribe_headers
from notifier.providers.addresses import email_address_problem, is_e164, normalize_phone
from notifier.providers.base import EmailMessage, Message, Provider, TextMessage
from notifier.store import Claim, JobContext, JobStore
from notifier.store.feedback import FeedbackStore
from notifier.store.jobs import AcceptedSend, unreadable_job

logger = logging.getLogger("notifier.pipeline.delivery")


@dataclass(frozen=True)
class DeliveryPolicy:
    """The knobs delivery needs from the settings, and nothing else."""

    lease_seconds: int
    backoff_base_seconds: float
    backoff_cap_seconds: float
    send_concurrency: int
    unsubscribe_url_base: str | None = None
    unknown_outcome: str = "retry"


def skip_reason(job: JobContext, now: datetime) -> str | None:
    """Why this job must not be sent to its recipient now, or None to send it."""
    if not job.recipient.get("is_active", True):
        return "recipient is inactive"
    preferences = job.preferences or {}
    if preferences.get("is_muted"):
        until = _as_datetime(preferences.get("muted_until"))
        if until is None or until > now:
            return "recipient is muted" + (f" until {until.isoformat()}" if until else "")
    channels = preferences.get("effective_channels")
    if isinstance(channels, list) and job.delivery_method not in channels:
        return f"recipient does not accept {job.delivery_method} notifications"
    return None


def preferences_url(base: str | None, token: str | None) -> str | None:
    """The recipient's preference page: `{token}` in the base is replaced, else appended."""
    if not base or not token:
        return None
    if "{token}" in base:
        return base.replace("{token}", token)
    return f"{base.rstrip('/')}/{token}"


def no_contact(what: str) -> PermanentDeliveryError:
    """The recipient has no usable address for the channel: a bounce without a request."""
    return PermanentDeliveryError(what, code="NO_CONTACT", log_status=FailureLogStatus.BOUNCED)


def email_address(recipient: Mapping[str, Any]) -> str:
    """The recipient's email address, or `NO_CONTACT` (bounced) when there is none."""
    address = recipient.get("email")
    problem = email_address_problem(address)
    if problem == "no email address":
        raise no_contact("recipient has no email address")
    if problem is not None:
        raise no_contact(f"recipient's email address is {problem}")
    return str(address)


def phone_number(recipient: Mapping[str, Any]) -> str:
    """The recipient's phone in E.164 (spaces removed), or `NO_CONTACT` (bounced)."""
    phone = normalize_phone(recipient.get("phone"))
    if not is_e164(phone):
        raise no_contact("recipient has no phone number in E.164 form (+15551234567)")
    return phone


@dataclass(frozen=True)
class Ready:
    """A job that passed every check before sending: its provider and rendered message."""

    provider: Provider
    message: Message


class Deliverer:
    """Delivers batches of claims with the injected store, providers, breakers and renderer."""

    def __init__(
        self,
        store: JobStore,
        providers: Mapping[str, Provider],
        breakers: Mapping[str, ProviderBreaker],
        renderer: Renderer,
        policy: DeliveryPolicy,
        feedback: FeedbackStore | None = None,
    ) -> None:
        self._store = store
        self._providers = providers
        self._breakers = breakers
        self._renderer = renderer
        self._policy = policy
        self._feedback = feedback  # where a provider's "never send here again" is recorded
        # One of each per deliverer, so per worker process; their threads start on first use.
        self._pool = ThreadPoolExecutor(policy.send_concurrency, thread_name_prefix="send")
        self._recorder = SuccessRecorder(store)

    def deliver_batch(self, claims: list[Claim]) -> dict[str, int]:
        """Deliver every claim whose lease is still current; returns counts by outcome.

        When the whole batch fits in the send threads, its attempts start in one round trip:
        every job is then in hand at once anyway, so a worker lost mid-batch leaves no more
        jobs with an unknown outcome than starting them one by one would. A larger batch starts
        each claim just before its own send, so the jobs not yet in hand stay `queued` and come
        back without using an attempt.
        """
        concurrency = min(self._policy.send_concurrency, len(claims))
        if concurrency <= 1:
            return counts([self.deliver_claim(claim) for claim in claims])
        pool = self._pool
        if len(claims) <= self._policy.send_concurrency:
            started = self._store.start_attempts(claims, self._policy.lease_seconds)
            current = {(job.job_id, job.lease_token) for job in started}
            stale = [c for c in claims if (c.job_id, c.lease_token) not in current]
            for claim in stale:
                event(logger, "stale_claim_dropped", logging.WARNING, job_id=claim.job_id)
            outcomes = list(pool.map(self.deliver_one, started)) + [Outcome.STALE] * len(stale)
            return counts(outcomes)
        return counts(list(pool.map(self.deliver_claim, claims)))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._recorder.close()

    def deliver_claim(self, claim: Claim) -> Outcome:
        """Start the claim's attempt (fenced by its token) and deliver it; returns the outcome."""
        try:
            started = self._store.start_attempts([claim], self._policy.lease_seconds)
        except Exception as error:
            return self._unreadable(claim, error)
        if not started:
            # A stale or duplicate copy, or a job to a suppressed address, which the start
            # itself skipped (its failure_reason and `blocked` log row say so).
            event(logger, "stale_claim_dropped", logging.WARNING, job_id=claim.job_id)
            return Outcome.STALE
        return self.deliver_one(started[0])

    def deliver_one(self, job: JobContext) -> Outcome:
        """Deliver one started job and record its outcome.

        Before the provider call any unexpected error is a plain retry (nothing was sent). From
        the call on, nothing may turn into a retry: see `_send`.
        """
        try:
            reason = skip_reason(job, datetime.now(UTC))
            if reason:
                recorded = self._store.skip(job, reason)
                return self._outcome(Outcome.SKIPPED, recorded, job, reason=reason)
            try:
                ready = self._prepare(job)
            except PermanentDeliveryError as error:
                recorded = self._store.fail(
                    job, None, error.code, error.message, log_status=error.log_status
                )
                return self._outcome(Outcome.FAILED, recorded, job, error=error.message)
        except Exception as error:  # a bug must not lose the job or stop the batch
            logger.exception("delivery_crashed", extra={"notifier_fields": {"job_id": job.job_id}})
            self._store.retry(
                job,
                "notifier",
                "INTERNAL",
                f"internal error: {type(error).__name__}: {error}",
                0,
                None,
                self._policy.backoff_base_seconds,
                self._policy.backoff_cap_seconds,
            )
            return Outcome.ERROR
        return self._send(job, ready.provider, ready.message)

    def _unreadable(self, claim: Claim, error: Exception) -> Outcome:
        """The attempt may have started but its row could not be read (JSON nested too deep
        for the decoder, say): fail the job alone, fenced by its token, with a readable reason.
        If the job did not start (the database was unreachable), the fenced fail matches
        nothing and the original error goes on, as before."""
        reason = f"the job cannot be read: {type(error).__name__}"
        try:
            failed = self._store.fail(
                unreadable_job(claim.job_id, claim.lease_token, reason), None, "UNREADABLE", reason
            )
        except Exception:
            raise error from None
        if not failed:
            raise error
        return self._outcome(Outcome.FAILED, True, unreadable_job(claim.job_id, "", reason),
                             error=reason)  # fmt: skip

    def _prepare(self, job: JobContext) -> Ready:
        """The provider and the rendered message, or `PermanentDeliveryError` saying why not."""
        if job.unreadable:
            raise PermanentDeliveryError(job.unreadable, code="UNREADABLE")
        provider = self._providers.get(job.delivery_method)
        if provider is None:
            raise PermanentDeliveryError(
                f"delivery method {job.delivery_method} is not supported", code="UNSUPPORTED"
            )
        return Ready(provider, self.compose(job))

    def _outcome(self, outcome: Outcome, recorded: bool, job: JobContext, **fields: Any) -> Outcome:
        """Log the outcome, or that the job's lease moved on before it could be recorded."""
        if not recorded:
            event(
                logger,
                "outcome_not_recorded",
                logging.WARNING,
                job_id=job.job_id,
                outcome=outcome.value,
                reason="the lease token is no longer current",
            )
            return Outcome.STALE
        event(
            logger,
            RECORDED_EVENTS[outcome],
            log_level(outcome),
            job_id=job.job_id,
            attempt=job.attempt,
            **fields,
        )
        return outcome

    def compose(self, job: JobContext) -> Message:
        """Render the job into the message its provider sends (pure apart from templates)."""
        recipient = job.recipient
        pref_url = preferences_url(
            self._policy.unsubscribe_url_base, recipient.get("preference_token")
        )
        context: dict[str, Any] = {
            "recipient": recipient,
            "group": {"name": job.group_name} if job.group_name else None,
            "content": job.content,
            "preferences_url": pref_url,  # one page serves preferences and unsubscribing
            "unsubscribe_url": None,
            "job_id": job.job_id,
        }
        if job.delivery_method == "email":
            address = email_address(recipient)
            rendered = self._renderer.email(job.notification_type, context)
            return EmailMessage(
                job_id=job.job_id,
                to=address,
                to_name=recipient.get("name"),
                subject=rendered.subject,
                html=rendered.html,
                text=rendered.text,
                headers=list_unsubscribe_headers(pref_url),
            )
        phone = phone_number(recipient)
        body = self._renderer.text(job.notification_type, context)
        if job.delivery_method == "whatsapp":
            return TextMessage(job_id=job.job_id, to=phone, body=body, channel="whatsapp")
        return TextMessage(job_id=job.job_id, to=phone, body=body, channel="sms")

    def _send(self, job: JobContext, provider: Provider, message: Message) -> Outcome:
        """Call the provider through its breaker and record what happened.

        Once the call has started the message may be out, so no error here becomes a plain
        retry: an answer-less failure is an unknown outcome, and if recording a success fails
        the job stays `processing` for the reaper (which logs it as `unknown`), never resent
        blindly.
        """
        breaker = self._breakers.get(provider.name)
        started = time.monotonic()
        name = provider.name
        try:
            if breaker is None:
                receipt = provider.send(message)
            else:
                receipt = breaker.guard(lambda: provider.send(message))
        except CircuitOpenError as error:
            recorded = self._store.defer(job, error.retry_at, str(error))
            return self._outcome(
                Outcome.DEFERRED, recorded, job, provider=name, until=error.retry_at.isoformat()
            )
        except UnknownOutcomeError as error:
            return self._unknown(job, name, error.message, _ms_since(started))
        except TransientDeliveryError as error:
            duration = _ms_since(started)
            status = self._store.retry(
                job,
                name,
                error.code,
                error.message,
                duration,
                error.retry_after,
                self._policy.backoff_base_seconds,
                self._policy.backoff_cap_seconds,
            )
            outcome = Outcome.RETRIED if status == "pending" else Outcome.FAILED
            return self._outcome(
                outcome,
                status is not None,
                job,
                provider=name,
                duration_ms=duration,
                error=error.message,
            )
        except PermanentDeliveryError as error:
            duration = _ms_since(started)
            recorded = self._store.fail(
                job, name, error.code, error.message, duration, error.log_status
            )
            if error.suppress:
                self._suppress(job, message, name, error.suppress)
            return self._outcome(
                Outcome.FAILED,
                recorded,
                job,
                provider=name,
                duration_ms=duration,
                error=error.message,
            )
        except BaseTimeoutException:
            raise  # RQ's job timeout: the job stays `processing` and the reaper takes it
        except Exception as error:  # the request may have gone out before this
            logger.exception(
                "provider_call_crashed", extra={"notifier_fields": {"job_id": job.job_id}}
            )
            return self._unknown(job, name, f"{type(error).__name__}: {error}", _ms_since(started))
        duration = _ms_since(started)
        answered = time.monotonic()
        current = self._record_success(job, name, receipt.message_id, receipt.response, duration)
        # From the provider's answer to its record's commit: the window in which losing this
        # worker would leave an accepted message with an unknown outcome.
        record_ms = round(1000 * (time.monotonic() - answered), 1)
        if not current:
            event(
                logger, "sent_after_lease_lost", logging.WARNING, job_id=job.job_id, provider=name
            )
        event(
            logger,
            RECORDED_EVENTS[Outcome.SENT],
            log_level(Outcome.SENT),
            job_id=job.job_id,
            attempt=job.attempt,
            provider=name,
            duration_ms=duration,
            record_ms=record_ms,
            message_id=receipt.message_id,
        )
        return Outcome.SENT

    def _suppress(self, job: JobContext, message: Message, provider: str, reason: str) -> None:
        """Suppress the address the provider refused for good (a Twilio STOP, an invalid
        number), so the next job to it is skipped where it starts. Best effort: the failure is
        already recorded, and a lost suppression only costs one more refused request."""
        if self._feedback is None:
            return
        channel = message.channel if isinstance(message, TextMessage) else "email"
        try:
            added = self._feedback.add_suppression(channel, message.to, reason, source=provider)
        except Exception as error:
            event(
                logger,
                "suppression_not_recorded",
                logging.ERROR,
                job_id=job.job_id,
                error=f"{type(error).__name__}: {error}",
            )
            return
        if added:
            event(logger, "address_suppressed", job_id=job.job_id, channel=channel, reason=reason)

    def _unknown(self, job: JobContext, provider: str, message: str, duration: int) -> Outcome:
        status = self._store.record_unknown_outcome(
            job, provider, message, self._policy.unknown_outcome
        )
        return self._outcome(
            Outcome.UNKNOWN_OUTCOME,
            status is not None,
            job,
            provider=provider,
            duration_ms=duration,
            error=message,
            now=status,
        )

    def _record_success(
        self,
        job: JobContext,
        provider: str,
        message_id: str | None,
        response: dict[str, Any] | None,
        duration: int,
    ) -> bool:
        """Record an accepted message through the group-committing recorder (which retries a
        failing database a few times: a success that is not on record would be sent again)."""
        return self._recorder.record(AcceptedSend(job, provider, message_id, response, duration))


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _as_datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value)
    return None
