"""Outcomes: their values (RQ results and tests count by them) and their literal log events."""

from __future__ import annotations

import logging

from notifier.pipeline.outcomes import RECORDED_EVENTS, Outcome, counts, log_level


def test_outcome_values_are_the_names_results_are_counted_by() -> None:
    assert [o.value for o in Outcome] == [
        "sent",
        "retried",
        "failed",
        "skipped",
        "deferred",
        "stale",
        "unknown_outcome",
        "error",
    ]


def test_each_recorded_outcome_has_its_literal_event_name() -> None:
    assert RECORDED_EVENTS == {
        Outcome.SENT: "job_sent",
        Outcome.RETRIED: "job_retried",
        Outcome.FAILED: "job_failed",
        Outcome.SKIPPED: "job_skipped",
        Outcome.DEFERRED: "job_deferred",
        Outcome.UNKNOWN_OUTCOME: "job_unknown_outcome",
    }


def test_routine_outcomes_log_at_info_and_the_rest_at_warning() -> None:
    info = {o for o in RECORDED_EVENTS if log_level(o) == logging.INFO}
    assert info == {Outcome.SENT, Outcome.SKIPPED, Outcome.DEFERRED, Outcome.RETRIED}
    assert log_level(Outcome.FAILED) == log_level(Outcome.UNKNOWN_OUTCOME) == logging.WARNING


def test_counts_are_keyed_by_plain_strings() -> None:
    found = counts([Outcome.SENT, Outcome.SENT, Outcome.STALE])

    assert found == {"sent": 2, "stale": 1}
    assert all(type(key) is str for key in found)
