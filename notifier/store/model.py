"""The finite sets of the job table, defined once: every module that names a status or a
delivery method imports them from here. The SQL CHECK constraints on `notification_jobs` are
their other half; tests/integration/test_store_model.py holds the two together.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """`notification_jobs.status`, in the order the lifecycle reaches them (docs/states)."""

    PENDING = "pending"
    QUEUED = "queued"
    PROCESSING = "processing"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    HELD = "held"  # waiting for a digest
    DIGESTED = "digested"  # carried by a digest job (terminal)


# Statuses a job can still leave (work waiting, in flight or held for a digest) ...
UNFINISHED: tuple[JobStatus, ...] = (
    JobStatus.PENDING, JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.HELD,
)  # fmt: skip
# ... and the ones it never leaves by itself (`processed_at` is set).
FINISHED: tuple[JobStatus, ...] = tuple(s for s in JobStatus if s not in UNFINISHED)


class DeliveryMethod(StrEnum):
    """`notification_jobs.delivery_method`."""

    EMAIL = "email"
    SMS = "sms"
    WHATSAPP = "whatsapp"
    PUSH = "push"


# The SQL functions that only read: a caller may repeat one after a transient error (a lost
# answer, a 503) without changing anything. Every other function changes state and is never
# repeated blindly (notifier/store/rest.py).
SAFE_TO_REPEAT: frozenset[str] = frozenset(
    {
        "notifier_read_snapshot",
        "notifier_ping",
        "notification_job_statuses",
        "notifier_handed_back",
        "list_adoptable_notification_jobs",
    }
)
