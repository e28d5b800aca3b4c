"""What became of one delivery attempt, and the log event each outcome writes.

`deliver_batch` counts outcomes by their value (RQ keeps that dict as the job's result), and
every event name is written out here so `grep job_retried` finds where it comes from.
"""

from __future__ import annotations

import logging
from enum import StrEnum


class Outcome(StrEnum):
    SENT = "sent"  # the provider accepted it
    RETRIED = "retried"  # transient failure: back to pending with backoff
    FAILED = "failed"  # permanent failure, or out of retries
    SKIPPED = "skipped"  # inactive, muted, or opted out of this channel
    DEFERRED = "deferred"  # breaker open: rescheduled, no attempt used
    STALE = "stale"  # the lease token moved on: another copy owns the job
    UNKNOWN_OUTCOME = "unknown_outcome"  # sent with no answer: NOTIFIER_UNKNOWN_OUTCOME decides
    ERROR = "error"  # a bug before sending: retried, logged with its traceback


# The event logged when an outcome is recorded. STALE and ERROR have their own events where
# they happen (`stale_claim_dropped`, `outcome_not_recorded`, `delivery_crashed`).
RECORDED_EVENTS: dict[Outcome, str] = {
    Outcome.SENT: "job_sent",
    Outcome.RETRIED: "job_retried",
    Outcome.FAILED: "job_failed",
    Outcome.SKIPPED: "job_skipped",
    Outcome.DEFERRED: "job_deferred",
    Outcome.UNKNOWN_OUTCOME: "job_unknown_outcome",
}
# Expected in normal running, so INFO; the others deserve a look, so WARNING (sent aside).
_ROUTINE = frozenset({Outcome.SENT, Outcome.SKIPPED, Outcome.DEFERRED, Outcome.RETRIED})


def log_level(outcome: Outcome) -> int:
    """INFO for the outcomes of a healthy pipeline, WARNING for those worth a look."""
    return logging.INFO if outcome in _ROUTINE else logging.WARNING


def counts(outcomes: list[Outcome]) -> dict[str, int]:
    """Outcomes counted by plain string value (the RQ result must unpickle without notifier)."""
    found: dict[str, int] = {}
    for outcome in outcomes:
        found[outcome.value] = found.get(outcome.value, 0) + 1
    return found
