"""The job statuses and delivery methods of notifier/store/model.py are exactly what the
migrated database's CHECK constraints allow, and the snapshot reader's every part reads."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

import psycopg
import pytest

from notifier.store.model import DeliveryMethod, JobStatus
from notifier.store.session import ConnectionCaller
from notifier.store.snapshot import read_snapshot


def allowed_values(db: psycopg.Connection[dict[str, Any]], constraint: str) -> set[str]:
    row = db.execute(
        "select pg_get_constraintdef(c.oid) as definition from pg_constraint c"
        " where c.conrelid = 'public.notification_jobs'::regclass and c.conname = %s",
        (constraint,),
    ).fetchone()
    assert row is not None, f"notification_jobs has no constraint {constraint}"
    return set(re.findall(r"'([^']*)'", row["definition"]))


@pytest.mark.parametrize(
    ("constraint", "enum"),
    [
        ("notification_jobs_status_check", JobStatus),
        ("notification_jobs_delivery_method_check", DeliveryMethod),
    ],
)
def test_the_enum_matches_the_check_constraint(
    db: psycopg.Connection[dict[str, Any]], constraint: str, enum: type[StrEnum]
) -> None:
    assert allowed_values(db, constraint) == {member.value for member in enum}


def test_every_part_of_a_snapshot_reads_on_an_empty_database(
    db: psycopg.Connection[dict[str, Any]],
) -> None:
    reader = ConnectionCaller(db, 10)
    snapshot = read_snapshot(reader, flow=True, window_seconds=3600, overview=True)
    assert snapshot.backlog.due_now == 0 and not snapshot.backlog.paused
    assert snapshot.flow.due == () and snapshot.flow.finished_24h == {}
    assert snapshot.activity.unfinished == {} and snapshot.activity.latency == {}
    assert snapshot.overview.jobs == {} and snapshot.overview.delivery_times.latency_p95_ms is None
    with pytest.raises(LookupError, match="overview=True"):
        _ = read_snapshot(reader).overview
