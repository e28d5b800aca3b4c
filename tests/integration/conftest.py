"""Real servers for integration tests: one PostgreSQL and one Redis per test session.

Each test gets its own database, cloned from a migrated template (fast), and an empty Redis.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from redis import Redis

from notifier.devstack.servers import (
    LocalPostgres,
    LocalRedis,
    find_postgres_bindir,
    find_redis_server,
)
from notifier.schema import migrate as migrations
from notifier.store import JobStore
from notifier.store.postgres import PostgresCaller
from tests.conftest import require_binary

REPO = Path(__file__).resolve().parents[2]
_database_numbers = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    require_binary(find_postgres_bindir() is not None, "PostgreSQL (initdb, postgres)")
    with LocalPostgres() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    require_binary(find_redis_server() is not None, "redis-server")
    with LocalRedis() as server:
        yield server


@pytest.fixture(scope="session")
def template_database(pg_server: LocalPostgres) -> str:
    url = pg_server.create_database("notifier_template")
    migrations.apply(url)
    return "notifier_template"


@pytest.fixture
def empty_database_url(pg_server: LocalPostgres) -> str:
    """A brand-new database with nothing in it."""
    return pg_server.create_database(f"empty_{os.getpid()}_{next(_database_numbers)}")


@pytest.fixture
def database_url(pg_server: LocalPostgres, template_database: str) -> str:
    """A freshly migrated database of this test's own."""
    return pg_server.create_database(
        f"test_{os.getpid()}_{next(_database_numbers)}", template=template_database
    )


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A superuser connection (autocommit, dict rows) to the test database."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def store(database_url: str) -> Iterator[JobStore]:
    job_store = JobStore(PostgresCaller(database_url, max_size=4))
    yield job_store
    job_store.close()


STORE_BACKENDS = ("postgres", "supabase")


def job_store_on(backend: str, database_url: str) -> Iterator[JobStore]:
    """A job store over psycopg, or over the Supabase REST API (the PostgREST stand-in of
    tests/support/postgrest.py in front of the same database). A module that wants its tests
    on both backends overrides `store` with `params=STORE_BACKENDS` and yields from this."""
    if backend == "postgres":
        job_store = JobStore(PostgresCaller(database_url, max_size=4))
        yield job_store
        job_store.close()
        return
    from notifier.store.rest import RestCaller
    from tests.support.postgrest import PostgrestStandin

    with PostgrestStandin(database_url, "test-jwt-secret-of-at-least-32-characters") as api:
        job_store = JobStore(RestCaller(api.url, api.key(), timeout=10, pool_size=9))
        yield job_store
        job_store.close()


@pytest.fixture
def redis_url(redis_server: LocalRedis) -> str:
    """The session's Redis, emptied for this test."""
    client = Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def base_env(database_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for notifier subprocesses (poller, rq worker) against this test's servers."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NOTIFIER_", "SENDGRID_", "TWILIO_"))
    }
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        # Console only because it is asked for: it is never a fallback.
        NOTIFIER_EMAIL_PROVIDER="console",
        NOTIFIER_SMS_PROVIDER="console",
        NOTIFIER_OUTBOX_DIR=str(tmp_path / "outbox"),
        NOTIFIER_POLL_INTERVAL="0.2",
        NOTIFIER_BACKOFF_BASE="0.05",
        NOTIFIER_BACKOFF_CAP="0.2",
        NOTIFIER_PROVIDER_TIMEOUT="2",
        PYTHONPATH=str(REPO),
        PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
    )
    return env
