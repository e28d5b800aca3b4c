"""The schema on an empty database: migrations, enqueue validation, RLS and function grants."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from notifier.schema import migrate as migrations
from notifier.store import JobStore
from tests.integration.seed import add_recipient

# Valid calls that leave the rest to the defaults (an immediate email needs a body).
ENQUEUE_FOR_RECIPIENT = """select enqueue_notification_job(%s, null, null, p_content => '{"body": "hi"}')"""
ENQUEUE_WITH_GROUP = """select enqueue_notification_job(%s, %s, null, p_content => '{"body": "hi"}')"""


SEED_CALL = (
    "SELECT enqueue_notification_job('{recipient}'::uuid, '{group}'::uuid, {memory}, "
    "'immediate', 'normal', 'email', "
    """'{{"subject": "Test Notification", "body": "Hello from the notification system!"}}'::jsonb, 0);"""
)


@contextmanager
def as_role(db: psycopg.Connection[Any], role: str, sub: str | None = None) -> Iterator[None]:
    """Act like PostgREST: SET ROLE plus the JWT claims, for the duration of a transaction."""
    claims = {"role": role, **({"sub": sub} if sub else {})}
    with db.transaction(force_rollback=True):
        db.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        db.execute(psycopg.sql.SQL("set local role {}").format(psycopg.sql.Identifier(role)))
        yield


def test_migrations_apply_on_empty_database_and_reapply_as_noop(empty_database_url: str) -> None:
    first = migrations.apply(empty_database_url)
    assert [m.version for m in first] == [m.version for m in migrations.discover()]
    assert migrations.apply(empty_database_url) == []
    assert migrations.pending(empty_database_url) == []


def test_seed_call_returns_a_job_id(db: psycopg.Connection[Any]) -> None:
    ids = add_recipient(db)
    memory = db.execute(
        "insert into memories (group_id, title) values (%s, 'first steps') returning id",
        (ids["group"],),
    ).fetchone()
    assert memory is not None
    row = db.execute(
        SEED_CALL.format(
            recipient=ids["recipient"], group=ids["group"], memory=f"'{memory['id']}'::uuid"
        )
    ).fetchone()
    assert row is not None
    job = db.execute(
        "select * from notification_jobs where id = %s", (row["enqueue_notification_job"],)
    ).fetchone()
    assert job is not None
    assert job["status"] == "pending" and job["content"]["subject"] == "Test Notification"


def test_seed_call_resolves_to_exactly_one_function(db: psycopg.Connection[Any]) -> None:
    count = db.execute(
        "select count(*) as n from pg_proc where proname = 'enqueue_notification_job'"
    ).fetchone()
    assert count is not None and count["n"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "'fax'"}, "unknown delivery_method 'fax'"),
        ({"method": "'push'"}, "^delivery method push is not supported\n"),
        ({"content": "'{}'::jsonb"},
         "^template email/immediate.html needs 'content.body', which the job does not have\n"),
        ({"content": """'{"subject": "x", "body": "  "}'::jsonb"""}, "needs 'content.body'"),
        ({"content": """'{"body": null}'::jsonb"""}, "needs 'content.body'"),
        ({"type": "'milestone'", "content": """'{"subject": "x"}'::jsonb"""},
         "^template email/milestone.html needs 'content.body'"),
        ({"method": "'sms'", "content": """'{"subject": "x"}'::jsonb"""},
         "^template sms/immediate.txt needs 'content.body'"),
        ({"type": "'weekly'"}, "unknown notification_type 'weekly'"),
        ({"urgency": "'asap'"}, "unknown urgency_level 'asap'"),
        ({"delay": "-5"}, "schedule_delay_minutes must be zero or positive, got -5"),
        ({"content": "'[1, 2]'::jsonb"}, "content must be a JSON object, got array"),
        (
            {"content": "jsonb_build_object('body', repeat('x', 70000))"},
            "more than the limit of 65536 bytes",
        ),
        ({"recipient": "gen_random_uuid()"}, "does not exist"),
        ({"group": "gen_random_uuid()"}, "group"),
    ],
)
def test_enqueue_rejects_bad_input_with_a_specific_error(
    db: psycopg.Connection[Any], change: dict[str, str], message: str
) -> None:
    ids = add_recipient(db)
    args = {
        "recipient": f"'{ids['recipient']}'::uuid",
        "group": f"'{ids['group']}'::uuid",
        "type": "'immediate'",
        "urgency": "'normal'",
        "method": "'email'",
        "content": """'{"body": "hi"}'::jsonb""",
        "delay": "0",
    } | change
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        db.execute(
            "select enqueue_notification_job({recipient}, {group}, null, {type}, {urgency}, "
            "{method}, {content}, {delay})".format(**args)
        )


@pytest.mark.parametrize(
    ("kind", "method", "content"),
    [
        ("immediate", "email", {"body": "hi"}),
        ("milestone", "whatsapp", {"body": "One year old"}),
        ("immediate", "sms", {"body": 42}),  # not a string: the templates print it
        ("digest", "email", {"subject": "a digest item needs no body"}),
        ("digest", "email", {"items": []}),
    ],
)
def test_enqueue_still_accepts_what_the_worker_can_deliver(
    db: psycopg.Connection[Any], kind: str, method: str, content: dict[str, Any]
) -> None:
    ids = add_recipient(db)
    row = db.execute(
        "select enqueue_notification_job(%s, %s, null, %s, 'normal', %s, %s, 0) as id",
        (ids["recipient"], ids["group"], kind, method, Jsonb(content)),
    ).fetchone()
    assert row is not None and row["id"] is not None


def test_enqueue_rejects_inactive_recipient(db: psycopg.Connection[Any]) -> None:
    ids = add_recipient(db, is_active=False)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="is inactive"):
        db.execute(ENQUEUE_FOR_RECIPIENT, (ids["recipient"],))


def test_enqueue_rejects_group_of_another_owner(db: psycopg.Connection[Any]) -> None:
    mine, theirs = add_recipient(db), add_recipient(db, name="Bo")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="belong to different owners"):
        db.execute(
            ENQUEUE_WITH_GROUP, (mine["recipient"], theirs["group"])
        )


def test_idempotency_key_returns_the_first_job(
    db: psycopg.Connection[Any], store: JobStore
) -> None:
    ids = add_recipient(db)
    first = store.enqueue(ids["recipient"], None, None, content={"body": "a"}, idempotency_key="k1")
    again = store.enqueue(ids["recipient"], None, None, content={"body": "b"}, idempotency_key="k1")
    other = store.enqueue(ids["recipient"], None, None, content={"body": "c"}, idempotency_key="k2")
    assert first == again != other
    count = db.execute("select count(*) as n from notification_jobs").fetchone()
    assert count is not None and count["n"] == 2


def test_owner_reads_own_jobs_and_nobody_else_does(db: psycopg.Connection[Any]) -> None:
    mine, theirs = add_recipient(db), add_recipient(db, name="Bo")
    for ids in (mine, theirs):
        db.execute(
            ENQUEUE_WITH_GROUP, (ids["recipient"], ids["group"])
        )
    db.execute(
        "insert into notification_preferences_cache (recipient_id, is_muted) values (%s, false)",
        (theirs["recipient"],),
    )
    count = "select count(*) as n from {}"
    with as_role(db, "anon"), pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute(count.format("notification_jobs"))
    with as_role(db, "authenticated", mine["owner"]):
        assert db.execute(count.format("notification_jobs")).fetchone() == {"n": 1}
        assert db.execute(count.format("notification_preferences_cache")).fetchone() == {"n": 0}
    with as_role(db, "authenticated", str(uuid.uuid4())):
        assert db.execute(count.format("notification_jobs")).fetchone() == {"n": 0}
    with as_role(db, "service_role"):
        assert db.execute(count.format("notification_jobs")).fetchone() == {"n": 2}


@pytest.mark.parametrize(
    "statement",
    [
        "update notification_jobs set status = 'sent'",
        "delete from notification_jobs",
        "update notification_preferences_cache set is_muted = true",
        "insert into notification_delivery_logs (recipient_id, delivery_method, status) "
        "values (gen_random_uuid(), 'email', 'delivered')",
    ],
)
def test_owner_cannot_change_job_state_directly(
    db: psycopg.Connection[Any], statement: str
) -> None:
    mine = add_recipient(db)
    with (
        as_role(db, "authenticated", mine["owner"]),
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        db.execute(statement)


def test_authenticated_user_cannot_enqueue_for_someone_elses_recipient(
    db: psycopg.Connection[Any],
) -> None:
    mine, theirs = add_recipient(db), add_recipient(db, name="Bo")
    with as_role(db, "authenticated", mine["owner"]):
        own = db.execute(ENQUEUE_FOR_RECIPIENT, (mine["recipient"],))
        assert own.fetchone() is not None
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="does not belong"):
            db.execute(ENQUEUE_FOR_RECIPIENT, (theirs["recipient"],))


def test_owner_cancels_own_pending_job_only(db: psycopg.Connection[Any]) -> None:
    mine, theirs = add_recipient(db), add_recipient(db, name="Bo")
    jobs = {
        name: db.execute(
            ENQUEUE_FOR_RECIPIENT + " as id", (ids["recipient"],)
        ).fetchone()["id"]  # type: ignore[index]
        for name, ids in (("mine", mine), ("theirs", theirs))
    }
    with as_role(db, "authenticated", mine["owner"]):
        assert db.execute(
            "select cancel_notification_job(%s) as ok", (jobs["theirs"],)
        ).fetchone() == {"ok": False}
        assert db.execute(
            "select cancel_notification_job(%s) as ok", (jobs["mine"],)
        ).fetchone() == {"ok": True}


WORKER_FUNCTIONS = [
    "claim_notification_jobs(10, 60)",
    "start_notification_attempts('[]'::jsonb, 60)",
    "release_notification_claims('[]'::jsonb)",
    "complete_notification_job(gen_random_uuid(), gen_random_uuid(), 'x', 'y')",
    "retry_notification_job(gen_random_uuid(), gen_random_uuid(), 'x', null, 'e')",
    "fail_notification_job(gen_random_uuid(), gen_random_uuid(), 'x', null, 'e')",
    "skip_notification_job(gen_random_uuid(), gen_random_uuid(), 'muted')",
    "defer_notification_job(gen_random_uuid(), gen_random_uuid(), now(), 'open')",
    "release_expired_notification_leases()",
    "cleanup_notification_data(30)",
    "create_digest_jobs()",
]


@pytest.mark.parametrize("call", WORKER_FUNCTIONS)
@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_worker_functions_are_refused_to_end_users(
    db: psycopg.Connection[Any], call: str, role: str
) -> None:
    with as_role(db, role, str(uuid.uuid4())), pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute(f"select * from {call}")


@pytest.mark.parametrize("call", WORKER_FUNCTIONS)
def test_worker_functions_run_as_service_role(db: psycopg.Connection[Any], call: str) -> None:
    with as_role(db, "service_role"):
        db.execute(f"select * from {call}")


def test_a_role_that_inherits_authenticated_is_still_an_end_user(
    db: psycopg.Connection[Any],
) -> None:
    mine, theirs = add_recipient(db), add_recipient(db, name="Bo")
    db.execute("create role premium_user nologin; grant authenticated to premium_user")
    with (
        as_role(db, "premium_user", mine["owner"]),
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        db.execute(ENQUEUE_FOR_RECIPIENT, (theirs["recipient"],))


def test_owner_cannot_point_a_digest_schedule_at_another_owners_group(
    db: psycopg.Connection[Any],
) -> None:
    mine, theirs = add_recipient(db), add_recipient(db, name="Bo")
    insert = (
        "insert into digest_schedules (recipient_id, group_id, frequency) values (%s, %s, 'daily')"
    )
    with (
        as_role(db, "authenticated", mine["owner"]),
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        db.execute(insert, (mine["recipient"], theirs["group"]))
    with as_role(db, "authenticated", mine["owner"]):
        db.execute(insert, (mine["recipient"], mine["group"]))


def test_owner_reads_compute_the_owned_recipients_once_per_query(
    db: psycopg.Connection[Any],
) -> None:
    mine = add_recipient(db)
    with as_role(db, "authenticated", mine["owner"]):
        plan = db.execute("explain select * from notification_jobs where true").fetchall()
    lines = [str(next(iter(row.values()))) for row in plan]
    [row_filter] = [line for line in lines if "Filter:" in line]
    # A hashed subplan: the owner's recipient ids are computed once, then each row is a hash
    # probe, instead of an ownership function evaluated on every row of every tenant.
    assert "hashed SubPlan" in row_filter and "notifier_" not in row_filter


def test_a_migration_edited_after_it_was_applied_is_reported(
    empty_database_url: str, tmp_path: Any
) -> None:
    import shutil

    from notifier.schema.check import check

    for migration in migrations.discover():
        shutil.copy(migration.path, tmp_path / migration.path.name)
    migrations.apply(empty_database_url, tmp_path)
    first = sorted(tmp_path.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with psycopg.connect(empty_database_url) as conn:
        assert [m.path.name for m in migrations.changed_since_applied(conn, tmp_path)] == [
            first.name
        ]
    assert any(
        "changed after it was applied" in problem for problem in check(empty_database_url, tmp_path)
    )


def test_check_reports_a_missing_trigger(database_url: str, db: psycopg.Connection[Any]) -> None:
    from notifier.schema.check import check

    assert not any("trigger" in p for p in check(database_url))
    db.execute("drop trigger notification_jobs_notify_due on notification_jobs")
    assert "trigger notification_jobs_notify_due on notification_jobs is missing" in check(
        database_url
    )
