"""The throwaway servers behind the integration tests and `notifier dev` start, serve, go away."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from notifier.devstack import servers as localstack
from notifier.devstack.servers import (
    LocalPostgres,
    LocalRedis,
    LocalServerError,
    find_postgres_bindir,
    find_redis_server,
)
from notifier.errors import NotifierError


def require(found: object, what: str) -> None:
    """Skip on a laptop without the server installed; under CI a missing server is a failure."""
    if found:
        return
    message = f"{what} is not installed, so the local server tests cannot run"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: install it in the CI image)")
    pytest.skip(message)


def require_postgres() -> None:
    require(find_postgres_bindir(), "PostgreSQL (initdb and postgres)")


def require_redis() -> None:
    require(find_redis_server(), "redis-server")


def answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until_closed(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while answers(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres() -> Iterator[LocalPostgres]:
    require_postgres()
    with LocalPostgres() as server:
        yield server


@pytest.fixture(scope="module")
def redis_server() -> Iterator[LocalRedis]:
    require_redis()
    with LocalRedis() as server:
        yield server


@pytest.fixture
def busy_port() -> Iterator[int]:
    yield from taken_port()


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A base_dir that PostgreSQL can reach when root hands it to another user.

    pytest's own tmp_path lives under a 0700 directory, so it will not do.
    """
    path = Path(tempfile.mkdtemp(prefix="notifier-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_postgres_answers_queries_as_superuser_postgres(postgres: LocalPostgres) -> None:
    assert postgres.url == f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres"
    with psycopg.connect(postgres.url) as conn:
        row = conn.execute(
            "select 1, current_user, current_setting('fsync'), current_setting('max_connections'),"
            " pg_encoding_to_char(encoding) from pg_database where datname = current_database()"
        ).fetchone()
    assert row == (1, "postgres", "off", "200", "UTF8")


def test_postgres_listens_on_loopback_only(postgres: LocalPostgres) -> None:
    with psycopg.connect(postgres.url) as conn:
        row = conn.execute("select current_setting('listen_addresses')").fetchone()
    assert row == ("127.0.0.1",)


def test_create_database_clones_the_template(postgres: LocalPostgres) -> None:
    template_url = postgres.create_database("clone_source")
    with psycopg.connect(template_url) as conn:
        conn.execute("create table greeting (text text)")
        conn.execute("insert into greeting values ('hello')")

    url = postgres.create_database("Clone Target", template="clone_source")

    assert url.endswith("/Clone%20Target")
    with psycopg.connect(url) as conn:
        assert conn.execute("select current_database(), text from greeting").fetchall() == [
            ("Clone Target", "hello")
        ]


def test_create_database_failure_names_the_database(postgres: LocalPostgres) -> None:
    with pytest.raises(LocalServerError, match=r"'orphan'.*'no_such_template'"):
        postgres.create_database("orphan", template="no_such_template")


def test_redis_answers_ping(redis_server: LocalRedis) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = redis.Redis.from_url(redis_server.url)
    assert client.ping() is True
    assert client.config_get("save") == {"save": ""}
    assert client.config_get("appendonly") == {"appendonly": "no"}
    client.close()


@pytest.mark.parametrize("server_class", [LocalPostgres, LocalRedis])
def test_stop_removes_the_directory_and_closes_the_port(
    server_class: type[LocalPostgres | LocalRedis],
) -> None:
    require_postgres() if server_class is LocalPostgres else require_redis()
    server = server_class().start()
    directory, port = server.dir, server.port
    assert directory is not None and directory.is_dir()
    assert port is not None and answers(port)

    server.stop()
    server.stop()  # a second stop, like the one atexit would run, is harmless

    assert not directory.exists()
    assert not answers(port)
    with pytest.raises(LocalServerError, match="not running"):
        _ = server.url


@pytest.mark.parametrize("server_class", [LocalPostgres, LocalRedis])
def test_start_on_a_taken_port_reports_the_server_log(
    server_class: type[LocalPostgres | LocalRedis], busy_port: int, reachable_dir: Path
) -> None:
    require_postgres() if server_class is LocalPostgres else require_redis()
    server = server_class(base_dir=reachable_dir, port=busy_port)

    with pytest.raises(NotifierError, match=r"(?s)Could not start.*Address already in use"):
        server.start()

    assert list(reachable_dir.iterdir()) == [], "a failed start must not leave its directory behind"
    assert server.process is None


@pytest.mark.parametrize("server_class", [LocalPostgres, LocalRedis])
def test_a_taken_free_port_is_retried_with_another(
    server_class: type[LocalPostgres | LocalRedis], busy_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_postgres() if server_class is LocalPostgres else require_redis()
    real_free_port = localstack._free_port
    offered = iter([busy_port])
    monkeypatch.setattr(localstack, "_free_port", lambda: next(offered, None) or real_free_port())

    with server_class() as server:
        assert server.port not in (None, busy_port)
        assert answers(server.port or 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root has to hand PostgreSQL to another user")
def test_postgres_started_by_root_runs_as_an_unprivileged_user(postgres: LocalPostgres) -> None:
    assert postgres.process is not None
    status = Path(f"/proc/{postgres.process.pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    groups = next(line for line in status.splitlines() if line.startswith("Groups:")).split()[1:]
    assert "0" not in uids
    assert "0" not in groups


CHILD = textwrap.dedent(
    """
    import json, time
    from notifier.devstack.servers import LocalPostgres, LocalRedis
    servers = [LocalPostgres().start(), LocalRedis().start()]
    print(json.dumps([[s.port, s.process.pid, str(s.dir)] for s in servers]), flush=True)
    time.sleep(120)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="relies on PR_SET_PDEATHSIG")
def test_servers_die_with_a_killed_parent() -> None:
    require_postgres()
    require_redis()
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    servers: list[list[int | str]] = []
    try:
        servers = json.loads(child.stdout.readline() or "[]")
        assert len(servers) == 2, "the child process could not start the servers"
        child.kill()  # SIGKILL: no atexit, no stop()
        child.wait()
        for port, _pid, _directory in servers:
            assert wait_until_closed(int(port)), f"server on port {port} outlived its parent"
    finally:
        child.kill()
        child.wait()
        for _port, pid, directory in servers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
            shutil.rmtree(str(directory), ignore_errors=True)
