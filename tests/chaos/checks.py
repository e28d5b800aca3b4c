"""What a chaos run must show, read from the database and the fault-injecting providers.

Kept apart from the run itself so tests/unit/test_chaos_checks.py can show each check fails
on the outcome it exists to catch.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from notifier.store.model import FINISHED
from tests.chaos.faults import FaultPlan

FINAL = {str(s) for s in FINISHED}


def read_outcome(database_url: str) -> tuple[dict[str, dict[str, Any]], dict[str, list[Any]]]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        jobs = {
            str(r["id"]): r
            for r in conn.execute(
                "select id, status, failure_reason, retry_count, outcome_unknown_at, metadata, "
                "delivery_method from notification_jobs"
            )
        }
        logs: dict[str, list[Any]] = {job: [] for job in jobs}
        for row in conn.execute(
            "select job_id, attempt, status from notification_delivery_logs order by created_at"
        ):
            logs[str(row["job_id"])].append(row)
    return jobs, logs


def check_guarantees(
    jobs: dict[str, dict[str, Any]],
    logs: dict[str, list[Any]],
    plan: FaultPlan,
    counts: dict[str, int],
) -> dict[str, Any]:
    accepted = plan.accepted_per_job()
    requested = plan.requests_per_job()
    unknown = {job for job, rows in logs.items() if any(r["status"] == "unknown" for r in rows)}

    not_final = [j for j, row in jobs.items() if row["status"] not in FINAL]
    assert not not_final, f"{len(not_final)} jobs not final"

    sent_unaccepted = [j for j, row in jobs.items() if row["status"] == "sent" and not accepted[j]]
    assert not sent_unaccepted, f"sent without an accepted request: {sent_unaccepted[:5]}"

    twice = {j for j, n in accepted.items() if n >= 2}
    unexplained = twice - unknown
    assert not unexplained, f"accepted twice without an unknown outcome on record: {unexplained}"

    unreadable = [
        (j, row["failure_reason"]) for j, row in jobs.items()
        if row["status"] == "failed"
        and (not (row["failure_reason"] or "").strip() or "Traceback" in row["failure_reason"])
    ]  # fmt: skip
    assert not unreadable, f"failed without a readable reason: {unreadable[:5]}"

    attempt_gaps = []
    for job, row in jobs.items():
        # A set: a success recorded after the reaper gave up on the same attempt adds a row.
        attempts = sorted({r["attempt"] for r in logs[job] if r["status"] != "muted"})
        rows = sum(1 for r in logs[job] if r["status"] != "muted")
        expected = list(range(1, (row["retry_count"] or 0) + 2))
        if row["status"] in ("sent", "failed") and (
            attempts != expected or requested[job] > rows
        ):
            attempt_gaps.append((job, row["status"], attempts, expected, requested[job]))
    assert not attempt_gaps, f"attempts without their delivery-log row: {attempt_gaps[:5]}"

    return {
        "statuses": counts,
        "sent": counts.get("sent", 0),
        "failed": counts.get("failed", 0),
        "provider_requests": sum(requested.values()),
        "accepted_twice": len(twice),
        "duplicates_explained_by_unknown_outcome": len(twice & unknown),
        "jobs_with_unknown_outcome_on_record": len(unknown),
        "failure_reasons": _reason_counts(jobs),
    }


def _reason_counts(jobs: dict[str, dict[str, Any]]) -> dict[str, int]:
    reasons: dict[str, int] = {}
    for row in jobs.values():
        if row["status"] == "failed":
            key = (row["failure_reason"] or "")[:60]
            reasons[key] = reasons.get(key, 0) + 1
    return reasons


def check_breaker(
    transitions: list[dict[str, Any]], outage: tuple[float, float], final: dict[str, str]
) -> None:
    """Each provider's breaker opened during the outage (or within the reset timeout after its
    start) and is closed at the end, after the outage."""
    start, end = outage
    for provider in ("sendgrid", "twilio"):
        mine = [t for t in transitions if t.get("provider") == provider]
        opened = [
            t for t in mine if t.get("new_state") == "open"
            and start - 1 <= datetime.fromisoformat(t["timestamp"]).timestamp() <= end + 1
        ]  # fmt: skip
        assert opened, f"{provider}'s breaker did not open during the outage: {mine}"
        closed_after = [
            t for t in mine if t.get("new_state") == "closed"
            and datetime.fromisoformat(t["timestamp"]).timestamp() > end
        ]  # fmt: skip
        assert closed_after, f"{provider}'s breaker did not close after the outage: {mine}"
        assert final[provider] == "closed", f"{provider}'s breaker is {final[provider]} at the end"
