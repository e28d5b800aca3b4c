"""Throwaway PostgreSQL and Redis servers for the integration tests and `notifier dev`.

Each server lives in its own temporary directory and runs as our direct child (PostgreSQL
without `pg_ctl`, which would detach it), so we notice if it dies during start-up and, on
Linux, the kernel stops it if we die without running `stop()` (SIGKILL, or a SIGTERM that
skips `atexit`). Only the directory of a server killed that way is left behind.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Self
from urllib.parse import quote

import psycopg
import redis
from psycopg import sql
from redis.backoff import NoBackoff
from redis.retry import Retry

from notifier.errors import NotifierError

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 20
# A port found free can be taken before the server binds it; then we try another one.
PORT_ATTEMPTS = 3
# initdb and postgres refuse to run as root; these accounts run them instead, first found wins.
UNPRIVILEGED_USERS = ("postgres", "nobody")


class LocalServerError(NotifierError):
    """A local PostgreSQL or Redis server could not be found, started or used."""


def find_postgres_bindir() -> Path | None:
    """The directory holding `initdb` and `postgres`, preferring the newest installed version."""
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if done.returncode == 0:
            candidates.append(Path(done.stdout.strip()))
    versioned = Path("/usr/lib/postgresql").glob("*/bin")
    newest_first = sorted(versioned, key=lambda p: [int(n) for n in re.findall(r"\d+", str(p))])
    candidates += reversed(newest_first)
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    return next(
        (d for d in candidates if (d / "initdb").is_file() and (d / "postgres").is_file()), None
    )


def find_redis_server() -> Path | None:
    found = shutil.which("redis-server")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _unprivileged_user() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as, or None to run it as ourselves (we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise LocalServerError(
        f"PostgreSQL cannot run as root and none of the users {', '.join(UNPRIVILEGED_USERS)} "
        "exists; create a 'postgres' system user or run as a non-root user."
    )


def _die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A preexec_fn making the child receive `sig` when our (forking) thread ends; Linux only."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork, not in the child
    parent = os.getpid()

    def arm() -> None:
        prctl(1, int(sig), 0, 0, 0)  # 1 == PR_SET_PDEATHSIG
        if os.getppid() != parent:  # we died between fork and prctl: nobody would signal us
            os.kill(os.getpid(), sig)

    return arm


class _LocalServer:
    """Shared life cycle: temp directory, child process, log, atexit clean-up."""

    name = "server"
    death_signal = signal.SIGTERM
    stop_signal = signal.SIGTERM

    def __init__(self, base_dir: Path | None = None, port: int | None = None) -> None:
        self.base_dir = base_dir
        self.requested_port = port
        self.port = port
        self.dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._user: pwd.struct_passwd | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Self:
        """Start the server and wait until it answers; a failed start leaves nothing behind.

        On Linux the server is signalled when the *thread* calling start() ends, so call it
        from one that lives as long as the server should (normally the main thread).
        """
        if self.process is not None:
            raise LocalServerError(f"local {self.name} is already running on port {self.port}")
        atexit.register(self.stop)
        try:
            self.dir = Path(tempfile.mkdtemp(prefix=f"notifier-{self.name}-", dir=self.base_dir))
            self._log = (self.dir / "server.log").open("ab")
            self._prepare()
            for attempt in range(1, PORT_ATTEMPTS + 1):
                self.port = self.requested_port or _free_port()
                try:
                    self._launch()
                    self._wait_until_ready()
                    break
                except LocalServerError as exc:
                    exited = self.process is not None and self.process.poll() is not None
                    lost_race = exited and "already in use" in str(exc)
                    if self.requested_port or not lost_race or attempt == PORT_ATTEMPTS:
                        raise
        except BaseException:
            self.stop(wait_for_removal=True)  # small: nothing was ever stored in it
            raise
        return self

    def stop(self, *, wait_for_removal: bool = False) -> None:
        """Stop the server and delete its directory; safe to call twice or after a failed start.

        The directory is gone at once; its files are removed in the background unless
        `wait_for_removal` (see `_remove_in_background`)."""
        atexit.unregister(self.stop)
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.dir is not None:
            if wait_for_removal:
                shutil.rmtree(self.dir, ignore_errors=True)
            else:
                _remove_in_background(self.dir)
            self.dir = None

    @property
    def url(self) -> str:
        if self.process is None:
            raise LocalServerError(f"local {self.name} is not running; call start() first")
        return self._url()

    def _prepare(self) -> None:
        """Work done once per start, before the port is chosen."""

    def _launch(self) -> None:
        raise NotImplementedError

    def _url(self) -> str:
        raise NotImplementedError

    def _is_ready(self) -> bool:
        raise NotImplementedError

    def _run(self, args: list[str | Path], *, background: bool) -> None:
        """Run a server binary, as the unprivileged user when we are root, logging to our log."""
        user = self._user
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            preexec_fn=_die_with_parent(self.death_signal) if background else None,
            # Its own session: a Ctrl-C at the terminal reaches `notifier dev` alone, which
            # still reads the database before it stops the servers itself.
            start_new_session=background,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else (),  # drop root's supplementary groups too
        )
        if background:
            self.process = process
        elif (code := process.wait()) != 0:
            self._fail(f"{Path(args[0]).name} exited with status {code}")

    def _wait_until_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._is_ready():
            if (code := self.process.poll()) is not None:
                self._fail(f"it exited with status {code} during start-up")
            if time.monotonic() > deadline:
                self._fail(f"it was not ready after {START_TIMEOUT_S:.0f} s")
            time.sleep(0.02)

    def _fail(self, what: str) -> None:
        assert self.dir is not None
        log = (self.dir / "server.log").read_text(errors="replace").splitlines()
        tail = "\n".join(log[-LOG_TAIL_LINES:]) or "(the log is empty)"
        runs_as = (
            ""
            if self._user is None or "Permission denied" not in tail
            else (f" It runs as user {self._user.pw_name!r}, who must be able to reach {self.dir}.")
        )
        raise LocalServerError(
            f"Could not start a local {self.name} on 127.0.0.1:{self.port}: {what}.{runs_as} "
            f"Last lines of its log:\n{tail}"
        )


class LocalPostgres(_LocalServer):
    """A fresh cluster tuned for speed over durability; superuser `postgres`, no password."""

    name = "postgres"
    _postgres: Path  # the server binary, found by _prepare()
    death_signal = signal.SIGQUIT  # immediate shutdown: the data is thrown away anyway
    stop_signal = signal.SIGINT  # what `pg_ctl stop -m fast` sends

    def __init__(
        self,
        base_dir: Path | None = None,
        port: int | None = None,
        *,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """`settings` are extra postgresql.conf lines (the benchmark preloads
        pg_stat_statements), applied after the defaults below."""
        super().__init__(base_dir, port)
        self.extra_settings = dict(settings or {})

    def _prepare(self) -> None:
        assert self.dir is not None
        bindir = find_postgres_bindir()
        if bindir is None:
            raise LocalServerError(
                "PostgreSQL server binaries (initdb, postgres) were not found via pg_config, "
                "/usr/lib/postgresql/*/bin or PATH; install PostgreSQL (apt install postgresql)."
            )
        self._postgres = bindir / "postgres"
        self._user = _unprivileged_user()
        if self._user is not None:
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)
        data = self.dir / "data"
        self._run(
            [
                bindir / "initdb",
                "-D",
                data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            background=False,
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.dir}'",
            "max_connections": "200",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            **self.extra_settings,
        }
        with (data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _launch(self) -> None:
        assert self.dir is not None
        self._run([self._postgres, "-D", self.dir / "data", "-p", str(self.port)], background=True)

    def _is_ready(self) -> bool:
        # Like `pg_ctl start -w`: the postmaster writes "ready" on the 8th line of its pid file.
        assert self.dir is not None and self.process is not None
        try:
            lines = (self.dir / "data" / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return False
        return len(lines) > 7 and lines[0] == str(self.process.pid) and lines[7].strip() == "ready"

    def _url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{quote(name, safe='')}"

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database `name` (cloned from `template` if given) and return its URL."""
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(query)
        except psycopg.Error as exc:
            source = f" from template {template!r}" if template else ""
            raise LocalServerError(f"Could not create database {name!r}{source}: {exc}") from exc
        return self.database_url(name)


class LocalRedis(_LocalServer):
    """A Redis server that keeps everything in memory and listens on loopback only."""

    name = "redis"

    def _launch(self) -> None:
        assert self.dir is not None
        server = find_redis_server()
        if server is None:
            raise LocalServerError(
                "redis-server was not found on PATH; install Redis (apt install redis-server)."
            )
        conf = self.dir / "redis.conf"
        conf.write_text(
            f'port {self.port}\nbind 127.0.0.1\ndir "{self.dir}"\nsave ""\nappendonly no\n'
            'daemonize no\nlogfile ""\n'
        )
        self._run([server, conf], background=True)

    def _is_ready(self) -> bool:
        # INFO rather than PING: it also tells us the server on this port is ours. No retries:
        # redis-py 8 retries a failed connection 10 times by default; this loop retries already.
        assert self.process is not None
        client = redis.Redis(
            host="127.0.0.1", port=self.port or 0, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
        try:
            return bool(client.info("server").get("process_id") == self.process.pid)
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def restart(self, down_seconds: float = 0.0) -> None:
        """Kill the server and start an empty one on the same port `down_seconds` later.

        Nothing is persisted, so every key is lost: to its clients this is a Redis crash and
        restart (the chaos suite's fault). Call it from the thread that called start().
        """
        if self.process is None:
            raise LocalServerError(f"local {self.name} is not running; call start() first")
        self.process.kill()
        self.process.wait()
        time.sleep(down_seconds)
        self._launch()  # the same port and directory: the config file names the port
        self._wait_until_ready()


def _remove_in_background(directory: Path) -> None:
    """Delete a stopped server's directory without waiting: a test session's PostgreSQL holds
    hundreds of databases (several hundred thousand files), whose removal can take minutes on a
    loaded machine. The directory is renamed away at once (so it is gone for any caller), and
    `rm` runs detached on the renamed one and may outlive us."""
    doomed = directory.with_name(f"{directory.name}.removing")
    try:
        os.rename(directory, doomed)
    except OSError:
        shutil.rmtree(doomed, ignore_errors=True)
        return
    try:
        subprocess.Popen(
            ["rm", "-rf", "--", str(doomed)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        shutil.rmtree(doomed, ignore_errors=True)
