"""The Supabase REST backend: every notifier process with only SUPABASE_URL and
SUPABASE_SERVICE_ROLE_KEY, against the PostgREST stand-in (tests/support/postgrest.py) over the
real test PostgreSQL.

The stand-in's own contract is checked first (so the rest tests something PostgREST-shaped),
then the REST caller's error mapping, the job store on both backends, and the real commands
end to end, asserting that no notifier process opens a connection to Postgres.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from notifier.devstack.demo import command, poller_command, scheduler_command
from notifier.errors import (
    StoreAuthError,
    StoreError,
    StoreFunctionMissingError,
    StoreUnavailableError,
)
from notifier.store import JobStore
from notifier.store.postgres import PostgresCaller
from notifier.store.rest import RestCaller
from notifier.store.snapshot import read_snapshot
from tests.integration import seed
from tests.integration.conftest import STORE_BACKENDS, job_store_on
from tests.integration.pipeline import WORKER_LINE, statuses, wait_for
from tests.support.loopback import SendGridLoopback, unused_base_url
from tests.support.postgrest import APPLICATION_NAME, PostgrestStandin, make_jwt

JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"


@pytest.fixture
def api(database_url: str) -> Iterator[PostgrestStandin]:
    with PostgrestStandin(database_url, JWT_SECRET) as server:
        yield server


@pytest.fixture
def rest(api: PostgrestStandin) -> Iterator[RestCaller]:
    caller = RestCaller(api.url, api.key(), timeout=5, read_retry_pauses=(0.2, 0.4, 0.8))
    yield caller
    caller.close()


@pytest.fixture(params=STORE_BACKENDS)
def any_store(request: pytest.FixtureRequest, database_url: str) -> Iterator[JobStore]:
    """The same job store over psycopg and over the REST API."""
    yield from job_store_on(request.param, database_url)


def post(api: PostgrestStandin, function: str, body: Any, key: str | None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers |= {"apikey": key, "Authorization": f"Bearer {key}"}
    request = urllib.request.Request(
        f"{api.url}/rest/v1/rpc/{function}", json.dumps(body).encode(), headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


# The stand-in keeps PostgREST's contract.


def test_standin_answers_scalars_sets_void_and_errors_as_postgrest_does(
    db: psycopg.Connection[Any], api: PostgrestStandin
) -> None:
    db.execute("create function t_add(a integer, b integer default 1) returns integer "
               "language sql as 'select a + b'")  # fmt: skip
    db.execute("create function t_add(a integer, c text) returns text language sql "
               "as $$select c || a$$")  # fmt: skip
    db.execute("create function t_void() returns void language sql as 'select'")
    db.execute("create function t_rows(n integer) returns table (i integer, sq integer) "
               "language sql as 'select g, g * g from generate_series(1, n) g'")  # fmt: skip
    db.execute("create function t_who() returns text language sql "
               "as $$select current_user || ':' || (current_setting('request.jwt.claims')::jsonb "
               "->> 'role')$$")  # fmt: skip
    db.execute("create function t_raise() returns void language plpgsql as "
               "$$begin raise exception 'nope, said the function'; end$$")  # fmt: skip
    db.execute("grant execute on all functions in schema public to service_role")
    key = api.key()
    assert post(api, "t_add", {"a": 2, "b": 3}, key) == (200, 5)
    assert post(api, "t_add", {"a": 2}, key) == (200, 3)  # the default, same overload
    assert post(api, "t_add", {"a": 2, "c": "x"}, key) == (200, "x2")  # overload by names
    assert post(api, "t_void", {}, key) == (204, None)
    assert post(api, "t_rows", {"n": 2}, key) == (200, [{"i": 1, "sq": 1}, {"i": 2, "sq": 4}])
    assert post(api, "t_rows", {"n": 0}, key) == (200, [])
    assert post(api, "t_who", {}, key) == (200, "service_role:service_role")
    status, body = post(api, "t_raise", {}, key)
    assert (
        status == 400 and body["code"] == "P0001" and body["message"] == "nope, said the function"
    )
    assert set(body) == {"code", "message", "details", "hint"}
    status, body = post(api, "t_add", {"z": 1}, key)
    assert status == 404 and body["code"] == "PGRST202" and "public.t_add(z)" in body["message"]
    anon = api.key("anon")
    status, body = post(api, "notifier_ping", {}, anon)
    assert (status, body["code"]) == (401, "42501")  # service_role only; anon → 401
    status, body = post(api, "notifier_ping", {}, api.key("authenticated"))
    assert (status, body["code"]) == (403, "42501")
    assert post(api, "notifier_ping", {}, None)[0] == 401  # no apikey: the gateway refuses
    forged = make_jwt({"role": "service_role"}, "another-secret-of-at-least-32-characters")
    assert post(api, "notifier_ping", {}, forged)[0] == 401
    api.unavailable_for(0.5)
    status, body = post(api, "notifier_ping", {}, key)
    assert (status, body["code"]) == (503, "PGRST001")


# The REST caller maps PostgREST's answers onto notifier's errors.


def test_a_wrong_key_is_an_auth_error_naming_the_variable(api: PostgrestStandin) -> None:
    for key in ("not-a-jwt", api.key("anon")):
        caller = RestCaller(api.url, key, timeout=5)
        with pytest.raises(StoreAuthError, match="SUPABASE_SERVICE_ROLE_KEY"):
            caller.check()
        caller.close()


def test_a_missing_function_names_its_migration_and_the_schema_reload(
    db: psycopg.Connection[Any], rest: RestCaller
) -> None:
    db.execute("drop function notifier_ping()")
    with pytest.raises(StoreFunctionMissingError) as caught:
        rest.check()
    message = str(caught.value)
    assert "notifier_ping()" in message and "20261201000300_rest_reads.sql" in message
    assert "NOTIFY pgrst, 'reload schema'" in message and "supabase db push" in message


def test_notifiers_own_refusals_keep_their_message(rest: RestCaller) -> None:
    with pytest.raises(StoreError) as caught:
        JobStore(rest).cleanup(0)
    assert caught.value.code == "22023"
    assert str(caught.value) == "days_to_keep must be at least 1, got 0"


def test_reads_are_retried_through_a_short_outage_and_state_changes_are_not(
    api: PostgrestStandin, rest: RestCaller
) -> None:
    api.unavailable_for(0.5)
    assert read_snapshot(rest).backlog.due_now == 0  # retried until the API answered
    api.unavailable_for(0.5)
    before = api.statuses[503]
    with pytest.raises(StoreUnavailableError):
        JobStore(rest).claim(10, 60, "test")
    assert api.statuses[503] == before + 1  # one request: a claim is never repeated blindly


def test_a_timeout_is_transient(db: psycopg.Connection[Any], api: PostgrestStandin) -> None:
    db.execute("create function t_slow() returns void language sql as 'select pg_sleep(2)'")
    db.execute("grant execute on function t_slow() to service_role")
    caller = RestCaller(api.url, api.key(), timeout=0.3)
    with pytest.raises(StoreUnavailableError, match="NOTIFIER_DB_TIMEOUT"):
        caller.call("t_slow", {})
    caller.close()


# The job store behaves the same on both backends.


def test_the_job_lifecycle_is_the_same_on_both_backends(
    db: psycopg.Connection[Any], any_store: JobStore
) -> None:
    ids = seed.add_recipient(db)
    job_id = any_store.enqueue(ids["recipient"], ids["group"], None,
                               content={"subject": "s", "body": "b"})  # fmt: skip
    claims = any_store.claim(10, 60, "test")
    assert [c.job_id for c in claims] == [job_id]
    started = any_store.start_attempts(claims, 60)
    assert [job.job_id for job in started] == [job_id] and started[0].recipient
    assert any_store.start_attempts(claims, 60) == []  # a second start is fenced off
    assert seed.job(db, job_id)["status"] == "processing"
    assert any_store.job_statuses([job_id]) == {job_id: "processing"}
    assert not any_store.cancel(job_id)
    assert any_store.set_paused(True, "me", "test")["paused"] is True
    assert any_store.handed_back() is False
    assert any_store.retry_failed(dry_run=True) == 0
    assert not any(any_store.release_expired("retry").values())  # the lease is current
    assert any_store.complete(started[0], "sendgrid", "msg-1", {"status": 202}, 12)
    assert seed.job(db, job_id)["status"] == "sent"
    assert any_store.cleanup(30) == 0
    assert any_store.create_digest_jobs() == 0


def test_the_snapshot_is_the_same_on_both_backends(
    db: psycopg.Connection[Any], database_url: str, rest: RestCaller
) -> None:
    ids = seed.add_recipient(db)
    store = JobStore(PostgresCaller(database_url, max_size=1))
    for _ in range(3):
        store.enqueue(ids["recipient"], None, None, content={"subject": "s", "body": "b"})
    store.set_paused(True, "ops@host", "deploy")
    direct = read_snapshot(PostgresCaller(database_url, max_size=1), flow=True,
                           window_seconds=3600, overview=True)  # fmt: skip
    over_rest = read_snapshot(rest, flow=True, window_seconds=3600, overview=True)
    store.close()
    assert over_rest.backlog.due_now == direct.backlog.due_now == 3
    assert over_rest.backlog.paused_at == direct.backlog.paused_at is not None
    assert over_rest.overview.jobs == direct.overview.jobs == {("pending", "email"): 3}
    assert over_rest.activity.unfinished == direct.activity.unfinished
    assert [(d.method, d.count) for d in over_rest.flow.due] == [("email", 3)]
    assert [(d.method, d.count) for d in direct.flow.due] == [("email", 3)]


# The real commands with only SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY.


@pytest.fixture
def rest_env(
    base_env: dict[str, str], api: PostgrestStandin, sendgrid: SendGridLoopback
) -> dict[str, str]:
    env = {k: v for k, v in base_env.items() if k != "DATABASE_URL"}
    return env | {
        "SUPABASE_URL": api.url,
        "SUPABASE_SERVICE_ROLE_KEY": api.key(),
        "NOTIFIER_EMAIL_PROVIDER": "sendgrid",
        "SENDGRID_API_KEY": "SG.test-key",
        "SENDGRID_API_BASE": sendgrid.base_url,
        "EMAIL_FROM": "notifications@example.com",
        "NOTIFIER_LEASE_SECONDS": "8",
        "NOTIFIER_REAPER_INTERVAL": "1",
        "NOTIFIER_DB_TIMEOUT": "3",
        "NOTIFIER_RQ_JOB_SIZE": "2",
    }


def enqueue(db: psycopg.Connection[Any], recipient: str, n: int) -> list[str]:
    return [
        str(db.execute(
            "select enqueue_notification_job(%s::uuid, null, null, 'immediate', 'normal', "
            "'email', %s, 0) as id",
            (recipient, psycopg.types.json.Jsonb({"subject": f"n{i}", "body": "hello"})),
        ).fetchone()["id"])  # type: ignore[index]
        for i in range(n)
    ]  # fmt: skip


def direct_connections(db: psycopg.Connection[Any]) -> list[str]:
    """Client connections to this database other than the test's own and the API's."""
    rows = db.execute(
        "select application_name from pg_stat_activity where datname = current_database() "
        "and pid <> pg_backend_pid() and backend_type = 'client backend' "
        "and application_name <> %s",
        (APPLICATION_NAME,),
    ).fetchall()
    return [row["application_name"] for row in rows]


def start(cmd: list[str], env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_pipeline_runs_over_rest_alone_and_survives_a_503_outage(
    db: psycopg.Connection[Any],
    rest_env: dict[str, str],
    api: PostgrestStandin,
    sendgrid: SendGridLoopback,
    tmp_path: Any,
) -> None:
    """SQL enqueue → `notifier poller` → stock `rq worker` → loopback SendGrid, with no
    DATABASE_URL anywhere; the API answers 503 for 3 s mid-run: every job sent, once."""
    assert "DATABASE_URL" not in rest_env
    recipient = seed.add_recipient(db)["recipient"]
    first = enqueue(db, recipient, 6)
    log = (tmp_path / "processes.log").open("wb")
    poller = start(poller_command(), rest_env, log)
    worker = start(WORKER_LINE, rest_env, log)
    try:
        wait_for(lambda: statuses(db).get("sent") == 6, timeout=60)
        assert direct_connections(db) == []  # poller and worker hold no Postgres connection
        api.unavailable_for(3)
        later = enqueue(db, recipient, 6)
        time.sleep(3.5)
        wait_for(lambda: statuses(db).get("sent") == 12, timeout=90)
        assert direct_connections(db) == []
    finally:
        stop(poller)
        stop(worker)
        log.close()
    assert api.statuses[503] > 0  # the outage was met, not slept through
    sent_ids = Counter(
        r.body["personalizations"][0]["custom_args"]["job_id"] for r in sendgrid.requests
    )
    assert set(sent_ids) == set(first + later) and set(sent_ids.values()) == {1}
    assert sendgrid.spec_violations == []
    output = (tmp_path / "processes.log").read_text()
    assert "database_unavailable" in output  # the poller backed off and said so


def test_a_wrong_key_stops_every_process_at_start_with_one_line(
    rest_env: dict[str, str], api: PostgrestStandin
) -> None:
    env = rest_env | {"SUPABASE_SERVICE_ROLE_KEY": api.key("anon")}
    for cmd in (poller_command(), scheduler_command(), WORKER_LINE):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        lines = [line for line in done.stderr.splitlines() if line.startswith("notifier:")]
        assert done.returncode != 0, cmd
        assert len(lines) == 1 and "SUPABASE_SERVICE_ROLE_KEY" in lines[0], done.stderr
        assert "Traceback" not in done.stderr


def test_an_unknown_function_stops_the_poller_naming_the_migration(
    db: psycopg.Connection[Any], rest_env: dict[str, str]
) -> None:
    db.execute("drop function notifier_ping()")
    done = subprocess.run(poller_command(), env=rest_env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert "notifier_ping()" in done.stderr and "20261201000300_rest_reads.sql" in done.stderr


def notifier(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command("notifier", *args), env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_operator_commands_work_over_rest(
    db: psycopg.Connection[Any], rest_env: dict[str, str]
) -> None:
    recipient = seed.add_recipient(db)["recipient"]
    job_ids = enqueue(db, recipient, 2)
    paused = notifier(rest_env, "pause", "--reason", "deploy")
    assert paused.returncode == 0 and "claiming paused" in paused.stdout, paused.stderr
    status = notifier(rest_env, "status", "--json")
    report = json.loads(status.stdout)
    assert report["database"]["backend"] == "supabase"
    assert report["backlog"]["due_now"] == 2 and report["paused"] is True
    assert notifier(rest_env, "resume").returncode == 0
    cancelled = notifier(rest_env, "cancel", job_ids[0])
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    retried = notifier(rest_env, "retry", "--failed", "--dry-run")
    assert retried.returncode == 0 and "would retry 0" in retried.stdout
    assert notifier(rest_env, "cleanup").returncode == 0
    digests = notifier(rest_env, "scheduler", "--burst")
    assert digests.returncode == 0 and "digest_pass_done" in digests.stderr, digests.stderr
    assert statuses(db) == {"pending": 1, "cancelled": 1}
    assert direct_connections(db) == []
    for args in (("migrate",), ("handback",), ("export", "--out", "-"), ("adopt", "--dry-run")):
        refused = notifier(rest_env, *args)
        assert refused.returncode == 2, args
        assert refused.stderr.count("\n") == 1 and "needs DATABASE_URL" in refused.stderr
    assert "supabase db push" in notifier(rest_env, "migrate").stderr


def test_web_reports_the_rest_backend_with_its_latency(
    rest_env: dict[str, str], tmp_path: Any
) -> None:
    port = int(unused_base_url().rsplit(":", 1)[1])
    env = rest_env | {"PORT": str(port), "NOTIFIER_WEB_HOST": "127.0.0.1"}
    log = (tmp_path / "web.log").open("wb")
    web = start(command("notifier", "web"), env, log)
    try:

        def health() -> Any:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as error:
                return json.loads(error.read())
            except OSError:
                return None

        body = wait_for(lambda: (health() or {}).get("database", {}).get("connected") and health(),
                        timeout=30)  # fmt: skip
        database = body["database"]
        assert database["connected"] is True and database["backend"] == "supabase"
        assert isinstance(database["latencyMs"], float)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert 'notifier_up{component="postgres"} 1.0' in metrics
    finally:
        stop(web)
        log.close()
