"""What notifier says to the database: one method per state change, each one SQL function.

Methods return plain values (ids as `str`) whichever backend answered, so callers never see
whether psycopg or PostgREST was underneath.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from notifier.store.base import FunctionStore, UnreadableJson


@dataclass(frozen=True)
class Claim:
    """A job claimed from Postgres: the id and the lease token that fences its attempt."""

    job_id: str
    lease_token: str
    urgency_level: str = "normal"
    delivery_method: str = "email"


@dataclass(frozen=True)
class JobContext:
    """Everything a worker needs to deliver one job, loaded when its attempt starts."""

    job_id: str
    lease_token: str
    recipient_id: str
    group_id: str | None
    notification_type: str
    urgency_level: str
    delivery_method: str
    content: dict[str, Any]
    metadata: dict[str, Any]
    retry_count: int
    max_retries: int
    scheduled_for: datetime | str | None
    recipient: dict[str, Any]
    group_name: str | None
    preferences: dict[str, Any] | None
    # Why the stored job cannot be delivered as read (a legacy row whose `content` is an array,
    # say); the worker fails it at once with this reason instead of crashing on it.
    unreadable: str | None = None

    @property
    def attempt(self) -> int:
        return self.retry_count + 1


@dataclass(frozen=True)
class AcceptedSend:
    """A message the provider accepted, to be recorded as its job's success."""

    job: JobContext
    provider: str
    message_id: str | None
    response: dict[str, Any] | None
    duration_ms: int


class JobStore(FunctionStore):
    """Typed wrappers around the job state functions of supabase/migrations."""

    def enqueue(
        self,
        recipient_id: str,
        group_id: str | None,
        update_id: str | None,
        notification_type: str = "immediate",
        urgency_level: str = "normal",
        delivery_method: str = "email",
        content: dict[str, Any] | None = None,
        delay_minutes: int = 0,
        idempotency_key: str | None = None,
    ) -> str:
        job_id = self._scalar(
            "enqueue_notification_job",
            p_recipient_id=recipient_id,
            p_group_id=group_id,
            p_update_id=update_id,
            p_notification_type=notification_type,
            p_urgency_level=urgency_level,
            p_delivery_method=delivery_method,
            p_content=content or {},
            p_schedule_delay_minutes=delay_minutes,
            p_idempotency_key=idempotency_key,
        )
        return str(job_id)

    def claim(self, limit: int, lease_seconds: int, claimed_by: str | None = None) -> list[Claim]:
        rows = self._caller.call(
            "claim_notification_jobs",
            {"p_limit": limit, "p_lease_seconds": lease_seconds, "p_claimed_by": claimed_by},
        )
        return [
            Claim(
                job_id=str(row["id"]),
                lease_token=str(row["lease_token"]),
                urgency_level=str(row["urgency_level"]),
                delivery_method=str(row["delivery_method"]),
            )
            for row in rows
        ]

    def release_claims(self, claims: list[Claim]) -> int:
        """Return claims that never reached Redis to `pending` without waiting for the lease."""
        payload = [{"job_id": c.job_id, "lease_token": c.lease_token} for c in claims]
        return int(self._scalar("release_notification_claims", p_claims=payload) or 0)

    def start_attempts(self, claims: list[Claim], lease_seconds: int) -> list[JobContext]:
        """Start every claim whose token is still current; stale ones are simply absent."""
        payload = [{"job_id": c.job_id, "lease_token": c.lease_token} for c in claims]
        rows = self._caller.call(
            "start_notification_attempts", {"p_claims": payload, "p_lease_seconds": lease_seconds}
        )
        return [_job_context(row) for row in rows]

    def complete(
        self,
        job: JobContext,
        provider: str,
        provider_message_id: str | None,
        provider_response: dict[str, Any] | None,
        duration_ms: int,
    ) -> bool:
        return bool(
            self._scalar(
                "complete_notification_job",
                p_job_id=job.job_id,
                p_lease_token=job.lease_token,
                p_provider=provider,
                p_provider_message_id=provider_message_id,
                p_provider_response=provider_response,
                p_duration_ms=duration_ms,
            )
        )

    def complete_many(self, sends: Sequence[AcceptedSend]) -> dict[str, bool]:
        """Record accepted messages in one call; maps each job id to whether its lease token
        was still current (a job no longer in the table is absent)."""
        payload = [
            {
                "job_id": send.job.job_id,
                "lease_token": send.job.lease_token,
                "provider": send.provider,
                "provider_message_id": send.message_id,
                "provider_response": send.response,
                "duration_ms": send.duration_ms,
            }
            for send in sends
        ]
        rows = self._caller.call("complete_notification_jobs", {"p_sends": payload})
        return {str(row["job_id"]): bool(row["token_matched"]) for row in rows}

    def retry(
        self,
        job: JobContext,
        provider: str,
        error_code: str | None,
        error_message: str,
        duration_ms: int,
        retry_after_seconds: float | None,
        backoff_base_seconds: float,
        backoff_cap_seconds: float,
        provider_response: dict[str, Any] | None = None,
    ) -> str | None:
        """Record a transient failure; returns the new status (`pending` or `failed`)."""
        status = self._scalar(
            "retry_notification_job",
            p_job_id=job.job_id,
            p_lease_token=job.lease_token,
            p_provider=provider,
            p_error_code=error_code,
            p_error_message=error_message,
            p_provider_response=provider_response,
            p_duration_ms=duration_ms,
            p_retry_after_seconds=retry_after_seconds,
            p_backoff_base_seconds=backoff_base_seconds,
            p_backoff_cap_seconds=backoff_cap_seconds,
        )
        return None if status is None else str(status)

    def fail(
        self,
        job: JobContext,
        provider: str | None,
        error_code: str | None,
        error_message: str,
        duration_ms: int | None = None,
        log_status: str = "failed",
        provider_response: dict[str, Any] | None = None,
    ) -> bool:
        return bool(
            self._scalar(
                "fail_notification_job",
                p_job_id=job.job_id,
                p_lease_token=job.lease_token,
                p_provider=provider,
                p_error_code=error_code,
                p_error_message=error_message,
                p_provider_response=provider_response,
                p_duration_ms=duration_ms,
                p_log_status=log_status,
            )
        )

    def skip(self, job: JobContext, reason: str) -> bool:
        return bool(
            self._scalar(
                "skip_notification_job",
                p_job_id=job.job_id,
                p_lease_token=job.lease_token,
                p_reason=reason,
            )
        )

    def defer(self, job: JobContext, until: datetime, reason: str) -> bool:
        return bool(
            self._scalar(
                "defer_notification_job",
                p_job_id=job.job_id,
                p_lease_token=job.lease_token,
                p_until=until.isoformat(),
                p_reason=reason,
            )
        )

    def record_unknown_outcome(
        self, job: JobContext, provider: str, error_message: str, unknown_outcome: str
    ) -> str | None:
        """The provider may or may not have the message: log `unknown`, apply the policy."""
        status = self._scalar(
            "record_unknown_notification_outcome",
            p_job_id=job.job_id,
            p_lease_token=job.lease_token,
            p_provider=provider,
            p_error_message=error_message,
            p_unknown_outcome=unknown_outcome,
        )
        return None if status is None else str(status)

    def release_expired(self, unknown_outcome: str, limit: int = 1000) -> dict[str, int]:
        rows = self._caller.call(
            "release_expired_notification_leases",
            {"p_unknown_outcome": unknown_outcome, "p_limit": limit},
        )
        return {str(row["outcome"]): int(row["job_count"]) for row in rows}

    def cancel(self, job_id: str) -> bool:
        return bool(self._scalar("cancel_notification_job", p_job_id=job_id))

    def cleanup(self, days_to_keep: int) -> int:
        return int(self._scalar("cleanup_notification_data", p_days_to_keep=days_to_keep) or 0)

    def parked_digest_schedules(self) -> int:
        """Active digest schedules the pass parked (`digest_settings.last_error`)."""
        return int(self._scalar("notifier_parked_digest_schedules") or 0)

    def create_digest_jobs(self) -> int:
        """Run the digest pass (the same SQL function pg_cron can call); returns how many
        digests it created."""
        return int(self._scalar("create_digest_jobs") or 0)

    def set_paused(
        self, paused: bool, by: str | None = None, reason: str | None = None
    ) -> dict[str, Any]:
        """Pause (no poller claims anything) or resume; returns the control row as it now is."""
        rows = self._caller.call(
            "set_notifier_paused", {"p_paused": paused, "p_by": by, "p_reason": reason}
        )
        return dict(rows[0]) if rows else {"paused": paused}

    def retry_failed(
        self,
        since: datetime | None = None,
        reason_like: str | None = None,
        dry_run: bool = False,
        include_unknown: bool = False,
    ) -> int:
        """Failed jobs back to pending with a fresh attempt budget; returns how many. Jobs whose
        outcome was unknown (the provider may have delivered them) only with `include_unknown`."""
        return int(
            self._scalar(
                "retry_failed_notification_jobs",
                p_since=None if since is None else since.isoformat(),
                p_reason_like=reason_like,
                p_dry_run=dry_run,
                p_include_unknown=include_unknown,
            )
            or 0
        )

    def adoptable_jobs(self) -> list[dict[str, Any]]:
        """`processing` jobs notifier never claimed: what the original worker left in flight."""
        rows = self._caller.call("list_adoptable_notification_jobs", {})
        return [
            {
                "job_id": str(row["id"]),
                "retry_count": int(row["retry_count"]),
                "max_retries": int(row["max_retries"]),
                "has_delivered_log": bool(row["has_delivered_log"]),
            }
            for row in rows
        ]

    def job_statuses(self, job_ids: list[str]) -> dict[str, str]:
        """The status of each of these jobs that exists."""
        rows = self._caller.call("notification_job_statuses", {"p_ids": job_ids})
        return {str(row["id"]): str(row["status"]) for row in rows}

    def adopt(
        self,
        job_id: str,
        outcome: str,
        *,
        message_id: str | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        processed_at: datetime | None = None,
        attempts: int = 0,
    ) -> str | None:
        """Settle a job the original worker left `processing`; returns its new status, or None
        when it is no longer such a job (adopted already)."""
        status = self._scalar(
            "adopt_notification_job",
            p_job_id=job_id,
            p_outcome=outcome,
            p_message_id=message_id,
            p_reason=reason,
            p_details=details or {},
            p_processed_at=None if processed_at is None else processed_at.isoformat(),
            p_attempts=attempts,
        )
        return None if status is None else str(status)

    def handed_back(self) -> bool:
        """Whether claims are paused by `notifier handback` (not by an operator's pause)."""
        return bool(self._scalar("notifier_handed_back"))

    def hand_back(self, unknown_outcome: str) -> dict[str, int]:
        """Pause claims and return what notifier holds to the original six statuses; the
        `in_flight` count is what notifier workers are still sending."""
        rows = self._caller.call(
            "hand_back_notification_jobs", {"p_unknown_outcome": unknown_outcome}
        )
        return {str(row["outcome"]): int(row["job_count"]) for row in rows}


def unreadable_job(job_id: str, lease_token: str, reason: str) -> JobContext:
    """A started job whose row could not even be loaded: enough to fail it, fenced by its token."""
    return JobContext(
        job_id, lease_token, "", None, "", "", "", {}, {}, 0, 0, None, {}, None, None, reason
    )


def _json_object(row: dict[str, Any], column: str) -> tuple[dict[str, Any], str | None]:
    """The column as a dict (NULL is empty), or `{}` and why it is not one."""
    value = row.get(column)
    if value is None:
        return {}, None
    if isinstance(value, dict):
        return value, None
    if isinstance(value, UnreadableJson):
        return {}, f"{column} cannot be read: {value.reason}"
    kind = {list: "array", str: "string", bool: "boolean"}.get(type(value), "number")
    return {}, f"{column} is a JSON {kind}, not an object"


def _job_context(row: dict[str, Any]) -> JobContext:
    group_id = row.get("group_id")
    content, content_problem = _json_object(row, "content")
    metadata, metadata_problem = _json_object(row, "metadata")
    return JobContext(
        job_id=str(row["id"]),
        lease_token=str(row["lease_token"]),
        recipient_id=str(row["recipient_id"]),
        group_id=None if group_id is None else str(group_id),
        notification_type=str(row["notification_type"]),
        urgency_level=str(row["urgency_level"]),
        delivery_method=str(row["delivery_method"]),
        content=content,
        metadata=metadata,
        retry_count=int(row.get("retry_count") or 0),
        max_retries=int(row.get("max_retries") or 0),
        scheduled_for=row.get("scheduled_for"),
        recipient=dict(row.get("recipient") or {}),
        group_name=row.get("group_name"),
        preferences=row.get("preferences"),
        unreadable=content_problem or metadata_problem,
    )
