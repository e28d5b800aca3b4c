"""Servers of the chaos suite's own: it restarts Redis and cuts database connections, so it
shares nothing with the integration tests' session servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from notifier.devstack.servers import (
    LocalPostgres,
    LocalRedis,
    find_postgres_bindir,
    find_redis_server,
)
from notifier.schema import migrate as migrations
from tests.conftest import require_binary


@pytest.fixture
def chaos_database_url() -> Iterator[str]:
    require_binary(find_postgres_bindir() is not None, "PostgreSQL (initdb, postgres)")
    with LocalPostgres() as server:
        url = server.create_database("chaos")
        migrations.apply(url)
        yield url


@pytest.fixture
def chaos_redis() -> Iterator[LocalRedis]:
    require_binary(find_redis_server() is not None, "redis-server")
    with LocalRedis() as server:
        yield server
