"""`notifier adopt`: settle what the original worker (TypeScript + BullMQ) left in flight.

The original worker put each due `pending` row into the BullMQ queue `notification-queue`
(BullMQ job id = database job id), set the row to `processing`, and wrote `sent`/`failed` when
the BullMQ job finished. Rows it left `processing` (notifier's own attempts always carry a
lease token, these never do) are settled by what BullMQ still knows of them:

  completed, success true        → sent (message_id from the return value)
  completed, success false       → failed (its `error`)
  failed (attempts exhausted)    → failed (BullMQ's failedReason)
  waiting, prioritized, delayed  → removed from the old queue, then pending (sent if a
  with no attempt made             `delivered` log row exists)
  active, or waiting/delayed     → removed from the old queue, then as "no trace": the attempt
  after an attempt                 made may have reached the provider
  no trace (completed jobs are   → sent if a `delivered` log row exists, else pending with
  removed after a while)           metadata.unknown_outcome: delivered again, at least once

A job is removed from the old queue before its row changes, so an old worker started again can
never send what notifier now owns. Unfinished BullMQ jobs whose row is not `processing` (the old
worker added them but died before updating the row) are removed too. Every state change is
`adopt_notification_job`; a second run finds nothing left to do.

The old queue itself is read and changed by `notifier.adoption.bullmq`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from notifier.adoption.bullmq import (
    WAITING_STATES,
    OldJob,
    OldQueue,
    Remover,
)
from notifier.errors import NotifierError
from notifier.store import JobStore


@dataclass(frozen=True)
class Verdict:
    """How one `processing` row is settled (`outcome` is adopt_notification_job's p_outcome)."""

    job_id: str
    bullmq_state: str  # "no trace" when BullMQ has none
    outcome: str  # sent | failed | pending | unknown
    remove: bool = False
    message_id: str | None = None
    reason: str | None = None
    processed_at: datetime | None = None
    attempts: int = 0


def verdict(job_id: str, old: OldJob | None) -> Verdict:
    """Pure: the old queue's word on a job the original worker left `processing`."""
    if old is None:
        return Verdict(job_id, "no trace", "unknown")
    state, attempts, finished = old.state, old.attempts, old.finished_at()
    if state in ("active", *WAITING_STATES):
        # Delayed for a retry (or stalled back to waiting) after an attempt: that attempt may
        # have been accepted by the provider before it failed, so its outcome is unknown.
        outcome = "unknown" if state == "active" or attempts > 0 else "pending"
        return Verdict(job_id, state, outcome, remove=True, attempts=attempts)
    if state == "failed":
        reason = old.fields.get("failedReason") or "failed in the original worker"
        return Verdict(job_id, state, "failed", False, None, reason, finished, attempts)
    result = old.return_value()
    success = result.get("success") if isinstance(result, dict) else None
    if success is True:
        message_id = None if result.get("messageId") is None else str(result["messageId"])
        delivered = _parse_time(result.get("deliveredAt")) or finished
        return Verdict(job_id, state, "sent", False, message_id, None, delivered, attempts)
    if success is False:
        reason = str(result.get("error") or "the original worker reported success: false")
        return Verdict(job_id, state, "failed", False, None, reason, finished, attempts)
    return Verdict(job_id, state, "unknown", attempts=attempts)  # completed, no readable result


class AdoptionError(NotifierError):
    """The old queue could not be changed as needed; the message says what to do."""


@dataclass
class AdoptionReport:
    """Jobs per (old queue state, result); `applied` is false for a dry run or a refusal."""

    applied: bool = False
    rows: Counter[tuple[str, str]] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # old-queue jobs that are not ours
    removed_with: str | None = None

    def render(self) -> str:
        if not self.rows:
            lines = ["nothing to adopt: no job is left in flight by the original worker"]
        else:
            header = ("old queue", "now" if self.applied else "would become", "jobs")
            rows = [(s, r, str(n)) for (s, r), n in sorted(self.rows.items())]
            widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
            lines = [
                f"{a.ljust(widths[0])}  {b.ljust(widths[1])}  {c.rjust(widths[2])}"
                for a, b, c in [header, *rows]
            ]
        if any("outcome unknown" in result for _, result in self.rows):
            lines.append(
                "an unknown outcome means the old worker may have sent it: it is delivered again "
                "and may arrive twice; list them with: select id from notification_jobs where "
                "metadata ? 'unknown_outcome'"
            )
        if self.removed_with:
            lines.append(f"removed from the old queue with {self.removed_with}")
        if self.ignored:
            shown = ", ".join(self.ignored[:5]) + (", ..." if len(self.ignored) > 5 else "")
            lines.append(
                f"left alone: {len(self.ignored)} unfinished job(s) in the old queue that are not "
                f"notification jobs ({shown})"
            )
        lines += [f"problem: {problem}" for problem in self.problems]
        return "\n".join(lines)


def adopt(
    store: JobStore, queue: OldQueue, remover: Remover | None, *, dry_run: bool
) -> AdoptionReport:
    """Settle every job the original worker left `processing`; see the module docstring."""
    report = AdoptionReport()
    candidates = {row["job_id"]: row for row in store.adoptable_jobs()}
    old_jobs = queue.jobs(candidates)
    verdicts = [verdict(job_id, old_jobs.get(job_id)) for job_id in candidates]
    leftovers = sorted(queue.unfinished_ids() - candidates.keys())
    statuses = store.job_statuses(leftovers) if leftovers else {}
    stale = [job_id for job_id in leftovers if job_id in statuses]
    report.ignored = [job_id for job_id in leftovers if job_id not in statuses]
    stale_row = {job_id: (f"unfinished, row {statuses[job_id]}", "removed from old queue, "
                          "row unchanged") for job_id in stale}  # fmt: skip

    report.problems += _preflight(queue, old_jobs)
    if dry_run or report.problems:
        for item in verdicts:
            has_log = bool(candidates[item.job_id]["has_delivered_log"])
            report.rows[(item.bullmq_state, _planned(item, has_log))] += 1
        report.rows.update(stale_row.values())
        return report

    report.applied = True
    to_remove = [item.job_id for item in verdicts if item.remove] + stale
    if to_remove and remover is None:
        raise AdoptionError("jobs must be removed from the old queue, but no remover was given")
    removed = remover.remove(to_remove) if to_remove and remover else {}
    report.removed_with = remover.description if removed and remover else None
    for job_id in stale:
        if not removed.get(job_id):
            report.problems.append(
                f"job {job_id} could not be removed from the old queue (locked, or part of a flow)"
            )
        report.rows[stale_row[job_id]] += 1
    for item in verdicts:
        if item.remove and not removed.get(item.job_id):
            report.problems.append(
                f"job {item.job_id} could not be removed from the old queue (locked, or part of a "
                "flow): left processing; stop the old worker and run notifier adopt again"
            )
            continue
        details = {"from": "bullmq", "queue": queue.name, "bullmq_state": item.bullmq_state,
                   "bullmq_attempts": item.attempts}  # fmt: skip
        status = store.adopt(
            item.job_id, item.outcome, message_id=item.message_id, reason=item.reason,
            details=details, processed_at=item.processed_at, attempts=item.attempts,
        )  # fmt: skip
        report.rows[(item.bullmq_state, _result(item, status))] += 1
    return report


def _preflight(queue: OldQueue, old_jobs: dict[str, OldJob]) -> list[str]:
    """Refuse while the old worker still runs: it could take a job while we adopt it."""
    problems = []
    workers = queue.connected_workers()
    if workers:
        problems.append(
            f"the old worker is still running: {len(workers)} BullMQ worker connection(s) to "
            f"queue {queue.name!r} ({', '.join(workers)}). Stop it (pm2 stop "
            "notification-worker), then run notifier adopt again; nothing was changed"
        )
    active = queue.jobs(str(job_id) for job_id in queue.redis.lrange(queue.key("active"), 0, -1))
    for job in sorted({**active, **old_jobs}.values(), key=lambda j: j.job_id):
        if job.state == "active" and job.lock_ttl_ms > 0:
            problems.append(
                f"job {job.job_id} is active and locked by a BullMQ worker for another "
                f"{job.lock_ttl_ms / 1000:.0f} s; once the old worker is stopped, wait for the "
                "lock to expire and run notifier adopt again; nothing was changed"
            )
    return problems


def _planned(item: Verdict, has_delivered_log: bool) -> str:
    if item.outcome in ("unknown", "pending") and has_delivered_log:
        return _result(item, "sent")  # adopt_notification_job: a delivered log row wins
    return _result(item, item.outcome)


def _result(item: Verdict, status: str | None) -> str:
    if status is None:
        return "unchanged (adopted meanwhile)"
    removed = ", removed from old queue" if item.remove else ""
    if item.bullmq_state == "completed" and status == "failed":
        return "failed (it returned success: false)"
    if item.outcome in ("unknown", "pending") and status == "sent":
        return f"sent (a delivered log row exists){removed}"
    if item.outcome == "unknown":
        return f"pending, outcome unknown: may duplicate{removed}"
    return f"{status}{removed}"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
