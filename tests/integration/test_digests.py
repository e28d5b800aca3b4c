"""Digests against real PostgreSQL: schedule arithmetic (time zones, DST, month ends), which jobs
are held, the pass (create_digest_jobs), concurrency, cleanup, and the real commands end to end.
"""

from __future__ import annotations

import email
import email.policy
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from notifier.devstack.demo import command
from notifier.devstack.servers import LocalPostgres
from notifier.schema import migrate as migrations
from notifier.store import JobStore
from tests.integration import seed
from tests.integration.pipeline import poller_burst, run, wait_for, worker_burst
from tests.integration.test_schema import as_role

Db = psycopg.Connection[dict[str, Any]]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture(scope="module")
def shared_db(pg_server: LocalPostgres, template_database: str) -> Iterator[Db]:
    """One database for the many small cases that change nothing (arithmetic, rejected
    inserts) or only rows of a recipient of their own: a fresh database per case would cost
    more than the cases themselves."""
    url = pg_server.create_database(f"digest_shared_{os.getpid()}", template=template_database)
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


# (frequency, delivery_time, delivery_day, timezone, after, expected next delivery)
NEXT_RUN_CASES = {
    "daily later the same day": ("daily", "09:00", None, "UTC", "2026-06-10T08:00Z", "2026-06-10T09:00Z"),
    "daily at the delivery instant is strictly after, so tomorrow": (
        "daily", "09:00", None, "UTC", "2026-06-10T09:00Z", "2026-06-11T09:00Z"),
    "daily on a leap day": ("daily", "08:00", None, "UTC", "2028-02-28T09:00Z", "2028-02-29T08:00Z"),
    "Berlin in winter is UTC+1": (
        "daily", "08:00", None, "Europe/Berlin", "2026-01-15T12:00Z", "2026-01-16T07:00Z"),
    "Berlin in summer is UTC+2": (
        "daily", "08:00", None, "Europe/Berlin", "2026-07-15T12:00Z", "2026-07-16T06:00Z"),
    "Berlin 08:00 stays 08:00 on the spring-forward day": (
        "daily", "08:00", None, "Europe/Berlin", "2026-03-28T12:00Z", "2026-03-29T06:00Z"),
    "Berlin 08:00 stays 08:00 on the fall-back day": (
        "daily", "08:00", None, "Europe/Berlin", "2026-10-24T12:00Z", "2026-10-25T07:00Z"),
    "Berlin 02:30 in the spring-forward gap moves to 03:00 CEST": (
        "daily", "02:30", None, "Europe/Berlin", "2026-03-28T12:00Z", "2026-03-29T01:00Z"),
    "Berlin 02:30 on the fall-back day is its first occurrence (CEST)": (
        "daily", "02:30", None, "Europe/Berlin", "2026-10-24T12:00Z", "2026-10-25T00:30Z"),
    "Berlin: after the first 02:30 the repeated one is not a second delivery": (
        "daily", "02:30", None, "Europe/Berlin", "2026-10-25T00:30Z", "2026-10-26T01:30Z"),
    "New York 02:30 in the gap moves to 03:00 EDT": (
        "daily", "02:30", None, "America/New_York", "2026-03-07T12:00Z", "2026-03-08T07:00Z"),
    "New York 01:30 on the fall-back day is its first occurrence (EDT)": (
        "daily", "01:30", None, "America/New_York", "2026-10-31T12:00Z", "2026-11-01T05:30Z"),
    "New York: between the two 01:30s the next delivery is tomorrow": (
        "daily", "01:30", None, "America/New_York", "2026-11-01T06:00Z", "2026-11-02T06:30Z"),
    "New York 08:00 stays 08:00 across spring forward": (
        "daily", "08:00", None, "America/New_York", "2026-03-07T14:00Z", "2026-03-08T12:00Z"),
    "Lord Howe's half-hour gap: 02:15 moves to 02:30": (
        "daily", "02:15", None, "Australia/Lord_Howe", "2026-10-03T00:00Z", "2026-10-03T15:30Z"),
    "weekly Monday later the same Monday": (
        "weekly", "08:00", 1, "UTC", "2026-11-23T07:00Z", "2026-11-23T08:00Z"),
    "weekly Monday just after delivery is next Monday": (
        "weekly", "08:00", 1, "UTC", "2026-11-23T08:00Z", "2026-11-30T08:00Z"),
    "weekly Sunday (7) from a Monday": (
        "weekly", "08:00", 7, "UTC", "2026-11-23T09:00Z", "2026-11-29T08:00Z"),
    "weekly Friday across the new year": (
        "weekly", "08:00", 5, "UTC", "2026-12-31T12:00Z", "2027-01-01T08:00Z"),
    "weekly Sunday in Berlin across the DST change": (
        "weekly", "08:00", 7, "Europe/Berlin", "2026-03-22T12:00Z", "2026-03-29T06:00Z"),
    "monthly 31 in February is the 28th": (
        "monthly", "08:00", 31, "UTC", "2026-01-31T09:00Z", "2026-02-28T08:00Z"),
    "monthly 31 in a leap February is the 29th": (
        "monthly", "08:00", 31, "UTC", "2028-01-31T09:00Z", "2028-02-29T08:00Z"),
    "monthly 31 in April is the 30th": (
        "monthly", "08:00", 31, "UTC", "2026-03-31T09:00Z", "2026-04-30T08:00Z"),
    "monthly 31 returns to the 31st after a short month": (
        "monthly", "08:00", 31, "UTC", "2026-02-28T09:00Z", "2026-03-31T08:00Z"),
    "monthly 29 in a common February is the 28th": (
        "monthly", "08:00", 29, "UTC", "2026-02-01T00:00Z", "2026-02-28T08:00Z"),
    "monthly 1st across the year end": (
        "monthly", "08:00", 1, "UTC", "2026-12-01T09:00Z", "2027-01-01T08:00Z"),
    "monthly uses the local date, not the UTC one (Tokyo)": (
        "monthly", "06:00", 1, "Asia/Tokyo", "2026-05-31T20:00Z", "2026-05-31T21:00Z"),
}  # fmt: skip


@pytest.mark.parametrize("case", NEXT_RUN_CASES.values(), ids=NEXT_RUN_CASES.keys())
def test_next_run_follows_the_local_schedule(shared_db: Db, case: tuple[Any, ...]) -> None:
    frequency, time, day, zone, after, expected = case
    row = shared_db.execute(
        "select digest_next_run(%s, %s::time, %s, %s, %s::timestamptz) as next",
        (frequency, time, day, zone, at(after)),
    ).fetchone()
    assert row is not None and row["next"] == at(expected)


@pytest.mark.parametrize(
    ("zone", "local_time", "gap_day", "gap_time"),
    [
        ("Europe/Berlin", "08:00", "2026-03-29", "08:00"),
        ("America/New_York", "02:30", "2026-03-08", "03:00"),
    ],
)
def test_a_year_of_daily_runs_keeps_the_local_time_once_per_day(
    shared_db: Db, zone: str, local_time: str, gap_day: str, gap_time: str
) -> None:
    """Chaining next runs never drifts: one delivery per local date, always at the local time
    (on the spring-forward day, at the end of the gap when the time falls in it)."""
    rows = shared_db.execute(
        """
        with recursive runs(n, at) as (
          select 1, digest_next_run('daily', %(t)s::time, null, %(z)s, '2026-01-01T12:00Z')
          union all
          select n + 1, digest_next_run('daily', %(t)s::time, null, %(z)s, at) from runs where n < 365
        )
        select (at at time zone %(z)s)::date as day, (at at time zone %(z)s)::time::text as time
          from runs order by n
        """,
        {"t": local_time, "z": zone},
    ).fetchall()
    days = [row["day"] for row in rows]
    assert days == [days[0] + timedelta(days=i) for i in range(365)]
    times = {str(row["day"]): row["time"][:5] for row in rows}
    assert times.pop(gap_day) == gap_time
    assert set(times.values()) == {local_time}


def add_schedule(db: Db, recipient: str, group: str | None = None, **values: Any) -> str:
    columns = {"recipient_id": recipient, "group_id": group, "frequency": "daily"} | values
    row = db.execute(
        psycopg.sql.SQL("insert into digest_schedules ({}) values ({}) returning id").format(
            psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, columns)),
            psycopg.sql.SQL(", ").join(psycopg.sql.Placeholder() * len(columns)),
        ),
        [Jsonb(v) if isinstance(v, dict) else v for v in columns.values()],
    ).fetchone()
    assert row is not None
    return str(row["id"])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "'Mars/Olympus' is not an IANA time zone name"),
        ({"timezone": "CET"}, "'CET' is a fixed-offset abbreviation"),
        ({"timezone": "UTC+3"}, r"'UTC\+3' is a POSIX offset"),
        ({"timezone": ""}, "timezone is required"),
        ({"frequency": "weekly"}, "weekly digest needs delivery_day 1 .* got NULL"),
        ({"frequency": "weekly", "delivery_day": 0}, "weekly digest needs delivery_day .* got 0"),
        ({"frequency": "weekly", "delivery_day": 8}, "weekly digest needs delivery_day .* got 8"),
        ({"frequency": "monthly", "delivery_day": 32}, "monthly digest needs delivery_day 1 to 31"),
        ({"frequency": "monthly", "delivery_day": 0}, "monthly digest needs delivery_day 1 to 31"),
        ({"max_updates_per_digest": 0}, "max_updates_per_digest must be 1 to 1000, got 0"),
        ({"digest_settings": {"delivery_method": "fax"}}, "delivery_method 'fax'"),
    ],
)
def test_invalid_schedule_is_rejected_on_insert(
    shared_db: Db, values: dict[str, Any], message: str
) -> None:
    ids = seed.add_recipient(shared_db)
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match=f"invalid digest schedule: .*{message}"
    ):
        add_schedule(shared_db, ids["recipient"], **values)


def test_invalid_schedule_is_rejected_on_update(db: Db) -> None:
    ids = seed.add_recipient(db)
    schedule = add_schedule(db, ids["recipient"])
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="'Nowhere/Land' is not an IANA"):
        db.execute(
            "update digest_schedules set timezone = 'Nowhere/Land' where id = %s", (schedule,)
        )
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match="weekly digest needs delivery_day"
    ):
        db.execute("update digest_schedules set frequency = 'weekly' where id = %s", (schedule,))


def schedule_row(db: Db, schedule: str) -> dict[str, Any]:
    row = db.execute("select * from digest_schedules where id = %s", (schedule,)).fetchone()
    assert row is not None
    return row


def expected_next(db: Db, schedule: str) -> datetime:
    row = db.execute(
        "select digest_next_run(frequency, delivery_time, delivery_day, timezone, now()) as next "
        "from digest_schedules where id = %s",
        (schedule,),
    ).fetchone()
    assert row is not None
    return row["next"]  # type: ignore[no-any-return]


def test_new_schedule_gets_its_next_run_and_a_rule_change_recomputes_it(db: Db) -> None:
    ids = seed.add_recipient(db)
    schedule = add_schedule(db, ids["recipient"], delivery_time="07:15", timezone="Asia/Kolkata")
    first = schedule_row(db, schedule)["next_digest_scheduled"]
    assert first == expected_next(db, schedule)
    assert first > datetime.now(UTC)

    db.execute("update digest_schedules set delivery_time = '19:45' where id = %s", (schedule,))
    recomputed = schedule_row(db, schedule)["next_digest_scheduled"]
    assert recomputed != first and recomputed == expected_next(db, schedule)

    chosen = datetime(2030, 1, 1, tzinfo=UTC)
    db.execute(
        "update digest_schedules set next_digest_scheduled = %s where id = %s", (chosen, schedule)
    )
    assert schedule_row(db, schedule)["next_digest_scheduled"] == chosen


def test_owner_writes_own_schedule_under_rls_but_cannot_call_the_helpers(db: Db) -> None:
    ids = seed.add_recipient(db)
    with as_role(db, "authenticated", ids["owner"]):
        schedule = add_schedule(db, ids["recipient"], timezone="Europe/Berlin")
        assert schedule_row(db, schedule)["next_digest_scheduled"] is not None
    with (
        as_role(db, "authenticated", ids["owner"]),
        pytest.raises(psycopg.errors.InvalidParameterValue, match="'CEST' is a fixed-offset"),
    ):
        add_schedule(db, ids["recipient"], timezone="CEST")
    with (
        as_role(db, "authenticated", ids["owner"]),
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        db.execute("select digest_next_run('daily', '08:00', null, 'UTC', now())")


def enqueue(
    db: Db,
    ids: dict[str, str],
    kind: str = "digest",
    urgency: str = "normal",
    group: bool = True,
    **content: Any,
) -> str:
    row = db.execute(
        "select enqueue_notification_job(%s, %s, null, %s, %s, 'email', %s, 0) as id",
        (ids["recipient"], ids["group"] if group else None, kind, urgency, Jsonb(content)),
    ).fetchone()
    assert row is not None
    return str(row["id"])


@pytest.mark.parametrize(
    ("kind", "urgency", "content", "frequency", "with_schedule", "status"),
    [
        ("digest", "normal", {"subject": "a photo"}, None, True, "held"),
        ("digest", "normal", {"subject": "a photo"}, None, False, "pending"),  # nothing to carry it
        ("digest", "normal", {"items": []}, None, False, "pending"),  # a ready-made digest
        ("immediate", "normal", {"body": "hi"}, "daily", True, "held"),
        ("immediate", "low", {"body": "hi"}, "weekly", True, "held"),
        ("immediate", "urgent", {"body": "now"}, "daily", True, "pending"),
        ("milestone", "normal", {"body": "first steps"}, "daily", True, "pending"),
        ("immediate", "normal", {"body": "hi"}, "immediate", True, "pending"),
        ("immediate", "normal", {"body": "hi"}, None, True, "pending"),
        ("immediate", "normal", {"body": "hi"}, "daily", False, "pending"),  # nothing to carry it
    ],
)
def test_enqueue_holds_what_a_digest_will_carry(
    shared_db: Db,
    kind: str,
    urgency: str,
    content: dict[str, Any],
    frequency: str | None,
    with_schedule: bool,
    status: str,
) -> None:
    db = shared_db  # each case has a recipient of its own
    ids = seed.add_recipient(db)
    if frequency:
        seed.set_preferences(db, ids["recipient"], effective_frequency=frequency)
    if with_schedule:
        add_schedule(db, ids["recipient"])
    job_id = enqueue(db, ids, kind, urgency, **content)
    assert seed.job(db, job_id)["status"] == status


def test_group_preferences_win_over_the_recipient_default_when_holding(db: Db) -> None:
    ids = seed.add_recipient(db)
    seed.set_preferences(db, ids["recipient"], effective_frequency="daily")
    db.execute(
        "insert into notification_preferences_cache (recipient_id, group_id, effective_frequency) "
        "values (%s, %s, 'immediate')",
        (ids["recipient"], ids["group"]),
    )
    add_schedule(db, ids["recipient"])
    assert seed.job(db, enqueue(db, ids, "immediate", body="x"))["status"] == "pending"
    assert seed.job(db, enqueue(db, ids, "immediate", group=False, body="x"))["status"] == "held"


def make_due(db: Db, schedule: str, ago: str = "1 minute") -> None:
    db.execute(
        "update digest_schedules set next_digest_scheduled = now() - %s::interval where id = %s",
        (ago, schedule),
    )


def digest_pass(db: Db) -> int:
    row = db.execute("select create_digest_jobs() as n").fetchone()
    assert row is not None
    return int(row["n"])


def digest_jobs(db: Db) -> list[dict[str, Any]]:
    return db.execute(
        "select * from notification_jobs where metadata ? 'digest_schedule_id' order by created_at"
    ).fetchall()


def test_due_schedule_bundles_held_items_into_one_digest(db: Db, store: JobStore) -> None:
    ids = seed.add_recipient(db)
    schedule = add_schedule(db, ids["recipient"], ids["group"], timezone="Europe/Berlin")
    items = [
        enqueue(db, ids, subject=f"Update {n}", body=f"Body {n}", content_type="photo")
        for n in range(3)
    ]
    make_due(db, schedule)

    assert store.create_digest_jobs() == 1

    [digest] = digest_jobs(db)
    assert (digest["status"], digest["urgency_level"], digest["delivery_method"]) == (
        "pending",
        "normal",
        "email",
    )
    assert (str(digest["recipient_id"]), str(digest["group_id"])) == (
        ids["recipient"],
        ids["group"],
    )
    content = digest["content"]
    assert [i["subject"] for i in content["items"]] == ["Update 0", "Update 1", "Update 2"]
    assert [i["job_id"] for i in content["items"]] == items
    assert content["item_count"] == 3 and content["items"][0]["body"] == "Body 0"
    assert content["items"][0]["notification_type"] == "digest"
    assert datetime.fromisoformat(content["items"][0]["occurred_at"]).tzinfo is not None
    assert digest["metadata"]["digest_schedule_id"] == schedule
    for item in items:
        row = seed.job(db, item)
        assert (row["status"], row["digest_job_id"]) == ("digested", digest["id"])
    after = schedule_row(db, schedule)
    assert after["last_digest_sent"] is not None
    assert after["next_digest_scheduled"] == expected_next(db, schedule)
    assert store.create_digest_jobs() == 0


def test_items_beyond_the_limit_wait_for_the_next_digest_oldest_first(db: Db) -> None:
    ids = seed.add_recipient(db)
    schedule = add_schedule(db, ids["recipient"], ids["group"], max_updates_per_digest=2)
    items = [enqueue(db, ids, subject=f"n{n}") for n in range(3)]
    make_due(db, schedule)
    assert digest_pass(db) == 1
    assert [seed.job(db, i)["status"] for i in items] == ["digested", "digested", "held"]
    make_due(db, schedule)
    assert digest_pass(db) == 1
    assert [[i["subject"] for i in d["content"]["items"]] for d in digest_jobs(db)] == [
        ["n0", "n1"],
        ["n2"],
    ]


def test_content_types_the_schedule_excludes_are_skipped_and_untyped_items_included(
    db: Db,
) -> None:
    ids = seed.add_recipient(db)
    schedule = add_schedule(db, ids["recipient"], ids["group"], include_content_types=["photo"])
    photo = enqueue(db, ids, subject="photo", content_type="photo")
    video = enqueue(db, ids, subject="video", content_type="video")
    untyped = enqueue(db, ids, subject="untyped")
    make_due(db, schedule)
    assert digest_pass(db) == 1
    assert seed.job(db, photo)["status"] == seed.job(db, untyped)["status"] == "digested"
    skipped = seed.job(db, video)
    assert skipped["status"] == "skipped"
    assert "content type video is not in" in skipped["failure_reason"]


def test_digest_uses_the_schedules_delivery_method(db: Db) -> None:
    ids = seed.add_recipient(db)
    schedule = add_schedule(
        db, ids["recipient"], ids["group"], digest_settings={"delivery_method": "sms"}
    )
    enqueue(db, ids, subject="x")
    make_due(db, schedule)
    assert digest_pass(db) == 1
    assert digest_jobs(db)[0]["delivery_method"] == "sms"


def test_no_held_items_means_no_digest_but_the_schedule_advances(db: Db) -> None:
    ids = seed.add_recipient(db)
    schedule = add_schedule(db, ids["recipient"], ids["group"])
    make_due(db, schedule)
    assert digest_pass(db) == 0
    after = schedule_row(db, schedule)
    assert after["last_digest_sent"] is None
    assert after["next_digest_scheduled"] == expected_next(db, schedule)


@pytest.mark.parametrize(
    ("muted_until", "digests"),
    [(None, 0), ("1 day", 0), ("-1 day", 1)],
    ids=["muted", "muted-until-tomorrow", "mute-expired"],
)
def test_muted_recipient_gets_no_digest_and_keeps_items_held(
    db: Db, muted_until: str | None, digests: int
) -> None:
    ids = seed.add_recipient(db)
    db.execute(
        "insert into notification_preferences_cache (recipient_id, is_muted, muted_until) "
        "values (%s, true, now() + %s::interval)",
        (ids["recipient"], muted_until),
    )
    schedule = add_schedule(db, ids["recipient"], ids["group"])
    item = enqueue(db, ids, subject="x")
    make_due(db, schedule)
    assert digest_pass(db) == digests
    assert seed.job(db, item)["status"] == ("digested" if digests else "held")
    assert schedule_row(db, schedule)["next_digest_scheduled"] == expected_next(db, schedule)


def test_after_three_days_down_one_digest_is_sent_and_the_next_is_in_the_future(
    db: Db,
) -> None:
    ids = seed.add_recipient(db)
    schedule = add_schedule(db, ids["recipient"], ids["group"], delivery_time="06:00")
    enqueue(db, ids, subject="while we were down")
    make_due(db, schedule, "3 days")
    assert digest_pass(db) == 1
    assert digest_pass(db) == 0
    next_run = schedule_row(db, schedule)["next_digest_scheduled"]
    assert datetime.now(UTC) < next_run <= datetime.now(UTC) + timedelta(days=1)


def test_group_schedule_takes_its_group_and_the_recipient_wide_one_takes_the_rest(
    db: Db,
) -> None:
    ids = seed.add_recipient(db)
    other_group = db.execute(
        "insert into recipient_groups (parent_id, name) values (%s, 'Other') returning id",
        (ids["owner"],),
    ).fetchone()
    assert other_group is not None
    group_schedule = add_schedule(db, ids["recipient"], ids["group"])
    wide_schedule = add_schedule(db, ids["recipient"], None)
    enqueue(db, ids, subject="in the group")
    enqueue(db, ids | {"group": str(other_group["id"])}, subject="in another group")
    enqueue(db, ids, group=False, subject="no group")
    make_due(db, group_schedule)
    make_due(db, wide_schedule)
    assert digest_pass(db) == 2
    carried = {
        str(d["metadata"]["digest_schedule_id"]): sorted(
            i["subject"] for i in d["content"]["items"]
        )
        for d in digest_jobs(db)
    }
    assert carried == {
        group_schedule: ["in the group"],
        wide_schedule: ["in another group", "no group"],
    }


def test_schedules_not_due_or_inactive_are_left_alone(db: Db) -> None:
    ids = seed.add_recipient(db)
    waiting = add_schedule(db, ids["recipient"], ids["group"])
    inactive = add_schedule(db, ids["recipient"], None, is_active=False)
    make_due(db, inactive)
    enqueue(db, ids, subject="x")
    before = {s: schedule_row(db, s)["next_digest_scheduled"] for s in (waiting, inactive)}
    assert digest_pass(db) == 0
    assert {s: schedule_row(db, s)["next_digest_scheduled"] for s in before} == before


def add_legacy_schedule(db: Db, recipient: str, group: str | None = None, **values: Any) -> str:
    """A row as the original system could write it: no validation, no computed next run."""
    db.execute("alter table digest_schedules disable trigger digest_schedules_check")
    try:
        return add_schedule(db, recipient, group, **values)
    finally:
        db.execute("alter table digest_schedules enable trigger digest_schedules_check")


@pytest.mark.parametrize(
    "legacy",
    [{"frequency": "weekly", "delivery_day": None}, {"timezone": "Europe/Berln"}],
    ids=["weekly-without-day", "time-zone-typo"],
)
def test_an_invalid_legacy_schedule_due_now_does_not_stop_other_digests(
    db: Db, legacy: dict[str, Any]
) -> None:
    broken = seed.add_recipient(db)
    broken_schedule = add_legacy_schedule(
        db,
        broken["recipient"],
        next_digest_scheduled=datetime.now(UTC) - timedelta(hours=1),
        **legacy,
    )
    ids = seed.add_recipient(db, name="Bo")
    schedule = add_schedule(db, ids["recipient"], ids["group"])
    item = enqueue(db, ids, subject="x")
    make_due(db, schedule)

    assert digest_pass(db) == 1
    assert seed.job(db, item)["status"] == "digested"
    parked = schedule_row(db, broken_schedule)
    assert parked["next_digest_scheduled"] is None
    assert parked["digest_settings"]["last_error"]
    assert digest_pass(db) == 0


def test_a_schedule_naming_another_owners_group_is_parked_not_sent(db: Db) -> None:
    ids = seed.add_recipient(db)
    stranger = seed.add_recipient(db, name="Eve")
    schedule = add_legacy_schedule(db, ids["recipient"], stranger["group"])
    make_due(db, schedule)
    db.execute(  # enqueue refuses such a job now; the original system did not
        "insert into notification_jobs (recipient_id, group_id, notification_type, "
        "delivery_method, status, content) values (%s, %s, 'digest', 'email', 'held', '{}')",
        (ids["recipient"], stranger["group"]),
    )

    assert digest_pass(db) == 0
    assert digest_jobs(db) == []
    parked = schedule_row(db, schedule)
    assert parked["next_digest_scheduled"] is None
    assert "does not belong to the owner" in parked["digest_settings"]["last_error"]


def test_a_parked_schedule_resumes_when_its_rule_is_corrected(db: Db) -> None:
    ids = seed.add_recipient(db)
    schedule = add_legacy_schedule(
        db,
        ids["recipient"],
        frequency="weekly",
        next_digest_scheduled=datetime.now(UTC) - timedelta(hours=1),
    )
    digest_pass(db)
    assert schedule_row(db, schedule)["next_digest_scheduled"] is None
    db.execute("update digest_schedules set delivery_day = 3 where id = %s", (schedule,))
    fixed = schedule_row(db, schedule)
    assert fixed["next_digest_scheduled"] == expected_next(db, schedule)
    assert "last_error" not in fixed["digest_settings"]


def test_a_parked_schedule_stays_parked_until_it_is_corrected(db: Db) -> None:
    """Given a next delivery by hand, a parked invalid schedule is parked again, not run with
    its unchecked rule; removing last_error is refused while it is still invalid."""
    ids = seed.add_recipient(db)
    schedule = add_legacy_schedule(
        db,
        ids["recipient"],
        ids["group"],
        timezone="EST",
        digest_settings={"last_error": "invalid digest schedule: EST"},
    )
    db.execute(
        "insert into notification_jobs (recipient_id, group_id, notification_type, "
        "delivery_method, status, content) values (%s, %s, 'digest', 'email', 'held', '{}')",
        (ids["recipient"], ids["group"]),
    )
    make_due(db, schedule)
    assert digest_pass(db) == 0
    assert schedule_row(db, schedule)["next_digest_scheduled"] is None
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="'EST' is a fixed-offset"):
        db.execute(
            "update digest_schedules set digest_settings = digest_settings - 'last_error' "
            "where id = %s",
            (schedule,),
        )
    db.execute(
        "update digest_schedules set timezone = 'America/New_York' where id = %s", (schedule,)
    )
    assert schedule_row(db, schedule)["next_digest_scheduled"] == expected_next(db, schedule)


@pytest.mark.parametrize("kind", ["digest", "immediate"])
@pytest.mark.parametrize("schedule_state", ["inactive", "parked"])
def test_a_job_no_live_schedule_will_carry_is_not_held(
    db: Db, kind: str, schedule_state: str
) -> None:
    ids = seed.add_recipient(db)
    seed.set_preferences(db, ids["recipient"], effective_frequency="daily")
    schedule = add_schedule(db, ids["recipient"], ids["group"])
    if schedule_state == "inactive":
        db.execute("update digest_schedules set is_active = false where id = %s", (schedule,))
    else:
        db.execute(
            "update digest_schedules set next_digest_scheduled = null, "
            """digest_settings = '{"last_error": "broken"}' where id = %s""",
            (schedule,),
        )
        assert schedule_row(db, schedule)["next_digest_scheduled"] is None
    assert seed.job(db, enqueue(db, ids, kind, subject="x", body="y"))["status"] == "pending"


def test_a_group_whose_schedule_is_parked_falls_to_the_recipient_wide_schedule(db: Db) -> None:
    ids = seed.add_recipient(db)
    group_schedule = add_schedule(db, ids["recipient"], ids["group"])
    db.execute(
        "update digest_schedules set next_digest_scheduled = null, "
        """digest_settings = '{"last_error": "broken"}' where id = %s""",
        (group_schedule,),
    )
    wide_schedule = add_schedule(db, ids["recipient"], None)
    item = enqueue(db, ids, subject="in the group")
    assert seed.job(db, item)["status"] == "held"
    make_due(db, wide_schedule)
    assert digest_pass(db) == 1
    assert seed.job(db, item)["status"] == "digested"


def test_a_second_recipient_wide_schedule_of_the_same_frequency_is_refused(db: Db) -> None:
    ids = seed.add_recipient(db)
    add_schedule(db, ids["recipient"], None)
    with pytest.raises(psycopg.errors.UniqueViolation):
        add_schedule(db, ids["recipient"], None)
    add_schedule(db, ids["recipient"], None, frequency="weekly", delivery_day=1)
    add_schedule(db, ids["recipient"], None, is_active=False)


def test_a_period_never_gets_a_second_digest_even_if_its_schedule_is_reset(db: Db) -> None:
    ids = seed.add_recipient(db)
    schedule = add_schedule(db, ids["recipient"], ids["group"])
    enqueue(db, ids, subject="first")
    make_due(db, schedule)
    period = schedule_row(db, schedule)["next_digest_scheduled"]
    assert digest_pass(db) == 1
    late = enqueue(db, ids, subject="late")
    db.execute(
        "update digest_schedules set next_digest_scheduled = %s where id = %s", (period, schedule)
    )
    assert digest_pass(db) == 0
    assert seed.job(db, late)["status"] == "held"


def test_a_schedule_locked_by_another_pass_is_skipped_not_waited_for(
    db: Db, database_url: str
) -> None:
    ids = seed.add_recipient(db)
    schedule = add_schedule(db, ids["recipient"], ids["group"])
    enqueue(db, ids, subject="x")
    make_due(db, schedule)
    with psycopg.connect(database_url) as other:
        other.execute("select 1 from digest_schedules where id = %s for update", (schedule,))
        db.execute("set statement_timeout = '5s'")
        assert digest_pass(db) == 0
    assert digest_pass(db) == 1


def test_two_concurrent_passes_create_one_digest_per_schedule(
    db: Db, database_url: str, store: JobStore
) -> None:
    """The scheduler (through JobStore) and a plain SQL call, started together, many times."""
    schedules = 150
    db.execute(
        """
        with people as (
          insert into recipients (parent_id, name, email)
          select gen_random_uuid(), 'r', 'r@example.com' from generate_series(1, %s) returning id
        )
        insert into digest_schedules (recipient_id, frequency, next_digest_scheduled)
        select id, 'daily', now() - interval '1 minute' from people
        """,
        (schedules,),
    )
    db.execute(
        "select count(enqueue_notification_job(s.recipient_id, null, null, 'digest', 'normal', "
        "'email', jsonb_build_object('subject', 'item ' || k), 0)) "
        "from digest_schedules s, generate_series(1, 2) k"
    )
    start = threading.Barrier(2)
    counts: list[int] = []

    def through_store() -> None:
        start.wait()
        counts.append(store.create_digest_jobs())

    def through_sql() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            start.wait()
            row = conn.execute("select create_digest_jobs()").fetchone()
            assert row is not None
            counts.append(int(row[0]))

    threads = [threading.Thread(target=through_store), threading.Thread(target=through_sql)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(counts) == 2 and sum(counts) == schedules
    per_recipient = db.execute(
        "select recipient_id, count(*) as n from notification_jobs "
        "where notification_type = 'digest' and status = 'pending' group by recipient_id"
    ).fetchall()
    assert len(per_recipient) == schedules and {r["n"] for r in per_recipient} == {1}
    items = db.execute(
        "select i.status, d.recipient_id = i.recipient_id as own from notification_jobs i "
        "left join notification_jobs d on d.id = i.digest_job_id "
        "where not i.metadata ? 'digest_schedule_id'"
    ).fetchall()
    assert len(items) == 2 * schedules and all(
        i["status"] == "digested" and i["own"] for i in items
    )
    overdue = db.execute(
        "select count(*) as n from digest_schedules where next_digest_scheduled <= now()"
    ).fetchone()
    assert overdue == {"n": 0}


def test_cleanup_removes_old_carried_items_and_keeps_unfinished_work(db: Db) -> None:
    ids = seed.add_recipient(db)
    schedule = add_schedule(db, ids["recipient"], ids["group"])

    def carry(subject: str, digest_status: str) -> tuple[str, str]:
        item = enqueue(db, ids, subject=subject)
        make_due(db, schedule)
        assert digest_pass(db) == 1
        digest = str(seed.job(db, item)["digest_job_id"])
        db.execute(
            "update notification_jobs set status = %s where id = %s", (digest_status, digest)
        )
        return item, digest

    old_item, old_sent_digest = carry("old, digest sent", "sent")
    waiting_item, pending_digest = carry("old, digest not sent yet", "pending")
    recent_item, recent_digest = carry("recent, digest sent", "sent")
    held = enqueue(db, ids, subject="old, still held")
    db.execute(
        "update notification_jobs set processed_at = now() - interval '40 days', "
        "updated_at = now() - interval '40 days', created_at = now() - interval '40 days' "
        "where id <> all(%s::uuid[])",
        ([recent_item, recent_digest],),
    )

    assert db.execute("select cleanup_notification_data(30) as n").fetchone() == {"n": 2}
    remaining = {str(r["id"]) for r in db.execute("select id from notification_jobs").fetchall()}
    assert {old_item, old_sent_digest}.isdisjoint(remaining)
    assert remaining == {waiting_item, pending_digest, recent_item, recent_digest, held}


def test_migration_over_the_original_schema_schedules_existing_rows(
    empty_database_url: str,
) -> None:
    """Schedules an original deployment already has get a next run when they are valid, and are
    left alone (null, never due) when not; the pass then works on them."""
    compat = migrations.discover()[0]
    original = Path(__file__).resolve().parents[1] / "fixtures" / "original_schema.sql"
    with psycopg.connect(empty_database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(compat.sql.encode())
        conn.execute(original.read_text().encode())
        recipient = conn.execute(
            "insert into recipients (parent_id, name, relationship, email) "
            "values (gen_random_uuid(), 'Ada', 'grandparent', 'a@example.com') returning id"
        ).fetchone()
        assert recipient is not None
        for frequency, day, zone in [("daily", None, "Europe/Berlin"), ("weekly", 3, "UTC"),
                                     ("monthly", None, "UTC"), ("weekly", 2, "CET")]:  # fmt: skip
            conn.execute(
                "insert into digest_schedules (recipient_id, frequency, delivery_day, timezone) "
                "values (%s, %s, %s, %s)",
                (recipient["id"], frequency, day, zone),
            )
        conn.execute(
            "insert into notification_jobs (recipient_id, notification_type, delivery_method, status) "
            "values (%s, 'immediate', 'email', 'sent')",
            (recipient["id"],),
        )

    migrations.apply(empty_database_url)

    with psycopg.connect(empty_database_url, autocommit=True, row_factory=dict_row) as conn:
        rows = conn.execute(
            "select frequency, timezone, next_digest_scheduled > now() as scheduled "
            "from digest_schedules order by frequency, timezone"
        ).fetchall()
        assert [(r["frequency"], r["timezone"], r["scheduled"]) for r in rows] == [
            ("daily", "Europe/Berlin", True),
            ("monthly", "UTC", None),
            ("weekly", "CET", None),
            ("weekly", "UTC", True),
        ]
        conn.execute(
            "select enqueue_notification_job(%s, null, null, 'digest', 'normal', 'email', "
            """'{"subject": "x"}', 0)""",
            (recipient["id"],),
        )
        conn.execute(
            "update digest_schedules set next_digest_scheduled = now() - interval '1 minute' "
            "where frequency = 'daily'"
        )
        assert conn.execute("select create_digest_jobs() as n").fetchone() == {"n": 1}


def test_migration_parks_invalid_legacy_schedules_and_deduplicates_recipient_wide_ones(
    empty_database_url: str,
) -> None:
    """Legacy rows the original system scheduled although invalid are parked rather than left
    due (a due invalid row would fail every pass); duplicate recipient-wide schedules keep the
    oldest active one so the unique index can be built."""
    compat = migrations.discover()[0]
    original = Path(__file__).resolve().parents[1] / "fixtures" / "original_schema.sql"
    with psycopg.connect(empty_database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(compat.sql.encode())
        conn.execute(original.read_text().encode())

        def schedule(recipient: Any, frequency: str, day: int | None, zone: str, ago: str) -> Any:
            row = conn.execute(
                "insert into digest_schedules (recipient_id, frequency, delivery_day, timezone, "
                "next_digest_scheduled, created_at) "
                "values (%s, %s, %s, %s, now() - %s::interval, now() - %s::interval) returning id",
                (recipient, frequency, day, zone, ago, ago),
            ).fetchone()
            assert row is not None
            return row["id"]

        people = conn.execute(
            "insert into recipients (parent_id, name, relationship, email) "
            "select gen_random_uuid(), 'r', 'grandparent', 'r@example.com' "
            "from generate_series(1, 2) returning id"
        ).fetchall()
        legacy, twice = people[0]["id"], people[1]["id"]
        weekly_without_day = schedule(legacy, "weekly", None, "UTC", "1 hour")
        abbreviation = schedule(legacy, "daily", None, "EST", "1 hour")
        oldest = schedule(twice, "daily", None, "UTC", "2 days")
        newer = schedule(twice, "daily", None, "UTC", "1 day")
        for recipient in (legacy, twice):
            conn.execute(
                "insert into notification_jobs (recipient_id, notification_type, delivery_method, "
                """status, content) values (%s, 'digest', 'email', 'pending', '{"subject": "x"}')""",
                (recipient,),
            )

    migrations.apply(empty_database_url)

    with psycopg.connect(empty_database_url, autocommit=True, row_factory=dict_row) as conn:
        rows = {r["id"]: r for r in conn.execute("select * from digest_schedules").fetchall()}
        for parked in (weekly_without_day, abbreviation):
            assert rows[parked]["next_digest_scheduled"] is None
            assert "invalid digest schedule" in rows[parked]["digest_settings"]["last_error"]
        assert "fixed-offset" in rows[abbreviation]["digest_settings"]["last_error"]
        assert rows[oldest]["is_active"] is True
        assert rows[newer]["is_active"] is False
        assert str(oldest) in rows[newer]["digest_settings"]["deactivated_reason"]
        conn.execute(
            "select enqueue_notification_job(%s, null, null, 'digest', 'normal', 'email', "
            """'{"subject": "y"}', 0)""",
            (twice,),
        )
        assert conn.execute("select create_digest_jobs() as n").fetchone() == {"n": 1}


def scheduler_command(*args: str) -> list[str]:
    return command("notifier", "scheduler", *args)


def test_scheduler_burst_then_the_pipeline_delivers_the_digest(
    db: Db, base_env: dict[str, str], tmp_path: Path
) -> None:
    """The real commands: `notifier scheduler --burst`, `notifier poller --burst`, and the
    documented `rq worker -c notifier.rq_settings --burst`, with the console provider."""
    ids = seed.add_recipient(db, timezone="Europe/Berlin")
    schedule = add_schedule(db, ids["recipient"], ids["group"], timezone="Europe/Berlin")
    subjects = ["First tooth", "Trip to the zoo", "Drawing of a cat"]
    items = [enqueue(db, ids, subject=s, body=f"About: {s}") for s in subjects]
    make_due(db, schedule)

    done = run(scheduler_command("--burst"), base_env)
    assert "digest_pass_done created=1" in done.stderr
    poller_burst(base_env)
    worker_burst(base_env)

    [digest] = digest_jobs(db)
    assert digest["status"] == "sent"
    assert {seed.job(db, i)["digest_job_id"] for i in items} == {digest["id"]}
    outbox = tmp_path / "outbox" / f"{digest['id']}.eml"
    message = email.message_from_bytes(outbox.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "Your digest: 3 updates"
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    for subject in subjects:
        assert subject in text and subject in html
    assert "Ada's family" in text


def test_scheduler_runs_passes_until_sigterm_then_exits_cleanly(
    db: Db, base_env: dict[str, str]
) -> None:
    ids = seed.add_recipient(db)
    schedule = add_schedule(db, ids["recipient"], ids["group"])
    enqueue(db, ids, subject="x")
    make_due(db, schedule)
    process = subprocess.Popen(
        scheduler_command(),
        env=base_env | {"NOTIFIER_DIGEST_INTERVAL": "3600"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: digest_jobs(db), timeout=20)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "scheduler_stopping signal=SIGTERM" in stderr
    assert "scheduler_stopped created=1" in stderr


def test_scheduler_refuses_a_malformed_interval_naming_the_variable(
    base_env: dict[str, str],
) -> None:
    done = subprocess.run(
        scheduler_command("--burst"),
        env=base_env | {"NOTIFIER_DIGEST_INTERVAL": "0"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "NOTIFIER_DIGEST_INTERVAL is malformed" in done.stderr


def test_a_held_item_can_be_cancelled_and_is_then_left_out_of_the_digest(db: Db) -> None:
    ids = seed.add_recipient(db)
    schedule = add_schedule(db, ids["recipient"], ids["group"])
    kept, cancelled = (enqueue(db, ids, subject=s, body="b") for s in ("kept", "cancelled"))
    assert seed.job(db, cancelled)["status"] == "held"
    row = db.execute("select cancel_notification_job(%s) as ok", (cancelled,)).fetchone()
    assert row is not None and row["ok"] is True
    make_due(db, schedule)
    assert digest_pass(db) == 1
    [digest] = digest_jobs(db)
    assert [item["job_id"] for item in digest["content"]["items"]] == [kept]
    assert seed.job(db, cancelled)["status"] == "cancelled"
