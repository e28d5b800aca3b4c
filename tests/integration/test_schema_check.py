"""`notifier migrate --check`: passes on a migrated database, names each problem otherwise."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from notifier.devstack.demo import command
from notifier.devstack.servers import LocalPostgres
from notifier.schema import check as schema_check
from notifier.schema import migrate as migrations

REPO = Path(__file__).resolve().parents[2]
ORIGINAL_SCHEMA = REPO / "tests" / "fixtures" / "original_schema.sql"
_original_numbers = iter(range(1_000_000))


def create_original_database(pg_server: LocalPostgres, name: str) -> str:
    """A database as the original notification system leaves it: Supabase's roles and auth
    functions (the compatibility migration, as Supabase would have them), then its schema."""
    url = pg_server.create_database(name)
    compat = migrations.discover()[0]
    assert compat.name == "supabase_compat"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(compat.sql.encode())
        conn.execute(ORIGINAL_SCHEMA.read_bytes())
    return url


@pytest.fixture
def original_database_url(pg_server: LocalPostgres) -> str:
    return create_original_database(pg_server, f"original_check_{next(_original_numbers)}")


def run_check(env: dict[str, str], database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command("notifier", "migrate", "--check"), env=env | {"DATABASE_URL": database_url},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_expectations_are_read_from_the_migration_files(tmp_path: Path) -> None:
    expected = schema_check.expected_schema()
    assert len(expected.functions["enqueue_notification_job"].arg_types) == 9
    assert expected.end_user_functions >= {"enqueue_notification_job", "cancel_notification_job"}
    assert "claim_notification_jobs" not in expected.end_user_functions
    assert expected.authenticated_privileges["notification_jobs"] == {"SELECT"}
    assert {"lease_token", "locked_until"} <= expected.own_tables["notification_jobs"]
    for path in migrations.discover():
        (tmp_path / path.path.name).write_text(path.sql)
    (tmp_path / "20991231000000_extra.sql").write_text(
        "create or replace function notifier_extra(p_a uuid, p_b text default 'x') returns int\n"
        "language sql security definer set search_path = public, pg_temp as $$ select 1 $$;\n"
    )
    extra = schema_check.expected_schema(tmp_path).functions["notifier_extra"]
    assert extra.arg_types == ["uuid", "text"] and extra.security_definer


def test_check_passes_on_a_migrated_database(base_env: dict[str, str], database_url: str) -> None:
    done = run_check(base_env, database_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "schema OK" in done.stdout


def test_check_fails_on_the_original_schema_and_names_the_problems(
    base_env: dict[str, str], original_database_url: str
) -> None:
    done = run_check(base_env, original_database_url)
    assert done.returncode == 1
    for problem in [
        "column notification_jobs.lease_token is missing",
        "function claim_notification_jobs(integer, integer, text) is missing",
        "function enqueue_notification_job(uuid,uuid,uuid,character varying,character varying,"
        "character varying,jsonb,integer) has the wrong signature",
        'policy "System can manage preferences cache" on notification_preferences_cache '
        "(ALL to public) lets every end user through",
        'policy "Parents can manage notification jobs for their recipients" on notification_jobs '
        "(ALL to public) is not one notifier intends",
        "anon has SELECT, INSERT, UPDATE, DELETE, TRUNCATE on notification_jobs; intended: none",
        "authenticated has INSERT, UPDATE, DELETE, TRUNCATE on notification_jobs; intended: SELECT",
        "anon can execute cleanup_notification_data(integer)",
        "table public.notifier_control is missing",
    ]:
        assert problem in done.stdout, f"{problem!r} not in:\n{done.stdout}"
    assert "schema problem(s)" in done.stderr


APP_TABLES_RLS = """
alter table recipients enable row level security;
alter table recipient_groups enable row level security;
alter table memories enable row level security;
create policy recipients_owner on recipients for all to authenticated
  using (parent_id = auth.uid()) with check (parent_id = auth.uid());
create policy groups_owner on recipient_groups for all to authenticated
  using (parent_id = auth.uid()) with check (parent_id = auth.uid());
"""


def test_after_migrating_the_original_schema_only_the_apps_own_tables_fail(
    base_env: dict[str, str], original_database_url: str
) -> None:
    """notifier fixes its own tables; the original app tables have no RLS, which the check
    reports (the runbook says how to fix it) but notifier migrate does not change."""
    migrated = subprocess.run(
        command("notifier", "migrate"), env=base_env | {"DATABASE_URL": original_database_url},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr
    done = run_check(base_env, original_database_url)
    assert done.returncode == 1
    assert sorted(line.split(":")[0] for line in done.stdout.splitlines()) == [
        "- row-level security is off on table public.memories",
        "- row-level security is off on table public.recipient_groups",
        "- row-level security is off on table public.recipients",
    ]
    assert "enable row level security" in done.stdout
    with psycopg.connect(original_database_url, autocommit=True) as conn:
        conn.execute(APP_TABLES_RLS)
    done = run_check(base_env, original_database_url)
    assert done.returncode == 0, done.stdout
    assert "schema OK" in done.stdout


def test_a_re_added_using_true_policy_fails_the_check(
    base_env: dict[str, str], db: psycopg.Connection[Any], database_url: str
) -> None:
    db.execute("create policy anyone_reads on notification_jobs for select using (true)")
    done = run_check(base_env, database_url)
    assert done.returncode == 1
    assert (
        '- policy "anyone_reads" on notification_jobs (SELECT to public) lets every end user '
        "through (USING/WITH CHECK true)" in done.stdout
    )


@pytest.mark.parametrize(
    ("breakage", "problem"),
    [
        (
            "create function enqueue_notification_job(uuid, uuid, uuid, varchar, varchar, varchar,"
            " jsonb, integer) returns uuid language sql as $$ select null::uuid $$",
            "function enqueue_notification_job has 2 signatures",
        ),
        (
            "grant execute on function claim_notification_jobs(integer, integer, text) to authenticated",
            "authenticated can execute claim_notification_jobs(integer,integer,text)",
        ),
        (
            "revoke execute on function cancel_notification_job(uuid) from authenticated",
            "authenticated cannot execute cancel_notification_job(uuid)",
        ),
        (
            "grant execute on function adopt_notification_job(uuid, varchar, text, text, jsonb, "
            "timestamptz, integer) to public",
            "anon can execute adopt_notification_job(",
        ),
        ("grant update on notification_preferences_cache to authenticated",
         "authenticated has UPDATE on notification_preferences_cache; intended: SELECT"),
        ("alter table digest_schedules disable row level security",
         "row-level security is off on table public.digest_schedules"),
        ("create table scratch (id int)", "row-level security is off on table public.scratch"),
        (
            "create policy owners_write on notification_jobs for update to authenticated "
            "using (recipient_id is not null)",
            'policy "owners_write" on notification_jobs (UPDATE to authenticated) is not one',
        ),
        ("drop policy notification_jobs_owner_read on notification_jobs",
         'policy "notification_jobs_owner_read" on notification_jobs is missing'),
        (
            "alter function release_notification_claims(jsonb) reset search_path",
            "function release_notification_claims(jsonb) should be SECURITY DEFINER with a fixed",
        ),
    ],
)  # fmt: skip
def test_check_names_each_kind_of_problem(
    db: psycopg.Connection[Any], database_url: str, breakage: str, problem: str
) -> None:
    assert schema_check.check(database_url) == []
    db.execute(breakage)  # type: ignore[arg-type]
    problems = schema_check.check(database_url)
    assert any(problem in p for p in problems), problems
