"""The chaos suite's checks (tests/chaos/checks.py) fail on the outcomes they exist to catch,
so a passing chaos run means something."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.chaos.checks import check_breaker, check_guarantees
from tests.chaos.faults import Answer, Fault, FaultPlan, FaultRates


def plan_with(*answers: tuple[str, Fault]) -> FaultPlan:
    plan = FaultPlan(FaultRates(), hang_seconds=1.5)
    for job_id, fault in answers:
        plan.answers.append(Answer(job_id, fault, fault in (Fault.NONE, Fault.HANG)))
    return plan


def job(status: str, retry_count: int = 0, reason: str | None = None) -> dict[str, Any]:
    return {"status": status, "retry_count": retry_count, "failure_reason": reason}


def log(*rows: tuple[int, str]) -> list[dict[str, Any]]:
    return [{"attempt": attempt, "status": status} for attempt, status in rows]


def check(jobs: dict[str, Any], logs: dict[str, Any], plan: FaultPlan) -> dict[str, Any]:
    return check_guarantees(jobs, logs, plan, {})


def test_a_clean_outcome_passes_and_counts_explained_duplicates() -> None:
    plan = plan_with(("a", Fault.HANG), ("a", Fault.NONE), ("b", Fault.SERVER_ERROR),
                     ("b", Fault.NONE))  # fmt: skip
    jobs = {"a": job("sent", 1), "b": job("sent", 1)}
    logs = {"a": log((1, "unknown"), (2, "delivered")), "b": log((1, "failed"), (2, "delivered"))}
    report = check(jobs, logs, plan)
    assert report["accepted_twice"] == report["duplicates_explained_by_unknown_outcome"] == 1


def test_a_job_sent_without_an_accepted_request_fails() -> None:
    plan = plan_with(("a", Fault.SERVER_ERROR))
    with pytest.raises(AssertionError, match="sent without an accepted request"):
        check({"a": job("sent")}, {"a": log((1, "delivered"))}, plan)


def test_a_duplicate_without_an_unknown_outcome_fails() -> None:
    plan = plan_with(("a", Fault.NONE), ("a", Fault.NONE))
    with pytest.raises(AssertionError, match="accepted twice"):
        check({"a": job("sent", 1)}, {"a": log((1, "failed"), (2, "delivered"))}, plan)


def test_a_job_left_processing_fails() -> None:
    with pytest.raises(AssertionError, match="not final"):
        check({"a": job("processing")}, {"a": []}, plan_with())


@pytest.mark.parametrize("reason", [None, " ", "Traceback (most recent call last): ..."])
def test_a_failure_without_a_readable_reason_fails(reason: str | None) -> None:
    plan = plan_with(("a", Fault.SERVER_ERROR))
    with pytest.raises(AssertionError, match="readable reason"):
        check({"a": job("failed", 0, reason)}, {"a": log((1, "failed"))}, plan)


def test_an_attempt_without_its_log_row_fails() -> None:
    plan = plan_with(("a", Fault.SERVER_ERROR), ("a", Fault.NONE))
    with pytest.raises(AssertionError, match="delivery-log row"):
        check({"a": job("sent", 1)}, {"a": log((2, "delivered"))}, plan)


def test_more_requests_than_logged_attempts_fails() -> None:
    plan = plan_with(("a", Fault.SERVER_ERROR), ("a", Fault.NONE))
    with pytest.raises(AssertionError, match="delivery-log row"):
        check({"a": job("sent", 0)}, {"a": log((1, "delivered"))}, plan)


def transition(provider: str, state: str, at: float) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(at, UTC).isoformat()
    return {"provider": provider, "new_state": state, "timestamp": stamp}


def both(state: str, at: float) -> list[dict[str, Any]]:
    return [transition("sendgrid", state, at), transition("twilio", state, at)]


CLOSED = {"sendgrid": "closed", "twilio": "closed"}


def test_the_breaker_opening_in_the_outage_and_closing_after_passes() -> None:
    check_breaker(both("open", 101) + both("closed", 107), (100.0, 104.0), CLOSED)


@pytest.mark.parametrize(
    ("transitions", "final", "match"),
    [
        (both("closed", 107), CLOSED, "did not open"),
        (both("open", 90) + both("closed", 107), CLOSED, "did not open"),
        (both("open", 101), CLOSED, "did not close"),
        (both("open", 101) + both("closed", 107), CLOSED | {"twilio": "open"}, "at the end"),
    ],
)
def test_a_breaker_that_missed_the_outage_or_stayed_open_fails(
    transitions: list[dict[str, Any]], final: dict[str, str], match: str
) -> None:
    with pytest.raises(AssertionError, match=match):
        check_breaker(transitions, (100.0, 104.0), final)
