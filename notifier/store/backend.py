"""Which door to the database a process uses: a direct PostgreSQL connection (DATABASE_URL) or
the Supabase REST API (SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY). Everything above the store
gets a `FunctionCaller` from here and never asks which one it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from notifier.config import BackendName, Settings, plain_secret
from notifier.errors import StoreUnavailableError
from notifier.log import event
from notifier.store.base import FunctionCaller

logger = logging.getLogger("notifier.store")
_announced = False


def backend(settings: Settings) -> BackendName:
    """The resolved backend (a `ConfigError` naming the variables when there is none). When
    both are configured and NOTIFIER_BACKEND is unset, direct Postgres wins: said once."""
    global _announced
    chosen = settings.require_backend()
    both = settings.database_url is not None and settings.supabase_url is not None
    if both and settings.backend is None and not _announced:
        _announced = True
        event(
            logger,
            "backend_chosen",
            backend=chosen,
            reason="DATABASE_URL and SUPABASE_URL are both set; set NOTIFIER_BACKEND=supabase "
            "to use the REST API instead",
        )
    return chosen


def open_caller(settings: Settings, *, pool_size: int, check: bool = False) -> FunctionCaller:
    """A long-lived caller for a process (poller, worker, scheduler, web). `check` (REST): make
    one call now, so a refused key (`StoreAuthError`) or missing migrations
    (`StoreFunctionMissingError`) stop the process at start-up; an API that is briefly away
    does not (the process's loop backs off and retries)."""
    if backend(settings) == "supabase":
        from notifier.store.rest import RestCaller

        url, key = settings.require_supabase()
        caller = RestCaller(url, key, timeout=settings.db_timeout, pool_size=pool_size)
        if check:
            try:
                caller.check()
            except StoreUnavailableError as error:  # transient: the loops back off and retry
                event(logger, "database_unavailable", logging.WARNING, error=error.message)
            except BaseException:
                caller.close()
                raise
        return caller
    from notifier.store.postgres import PostgresCaller

    return PostgresCaller(
        settings.require_database_url(), max_size=pool_size, prepare=settings.prepared_statements
    )


def check_backend(settings: Settings) -> None:
    """Start-up check of a process that builds its store later (the RQ worker): over REST, one
    call now; over Postgres nothing (the pool reports a bad URL on first use, as before)."""
    if backend(settings) == "supabase":
        open_caller(settings, pool_size=1, check=True).close()


@contextmanager
def short_caller(
    settings: Settings, *, application_name: str, connect_timeout: float, statement_timeout: float
) -> Iterator[FunctionCaller]:
    """A caller for one short read or command (a probe, `notifier status`, an ops command):
    over Postgres one connection that gives up on time, over REST a client with that timeout."""
    if backend(settings) == "supabase":
        from notifier.store.rest import RestCaller

        url, key = settings.require_supabase()
        rest = RestCaller(
            url, key, timeout=min(settings.db_timeout, statement_timeout), pool_size=1
        )
        try:
            yield rest
        finally:
            rest.close()
        return
    from notifier.store.session import ConnectionCaller, connect

    conn = connect(
        settings.require_database_url(),
        connect_timeout=connect_timeout,
        application_name=application_name,
    )
    caller = ConnectionCaller(conn, statement_timeout)
    try:
        yield caller
    finally:
        caller.close()


def preload(settings: Settings) -> None:
    """Import the REST client (supabase-py takes about a second the first time) before a
    probe with a sub-second deadline needs it."""
    if settings.resolved_backend == "supabase":
        import notifier.store.rest  # noqa: F401


def endpoint(settings: Settings) -> str | None:
    """Where the backend is, for health and status output (never a password)."""
    from notifier.redaction import endpoint as url_endpoint

    if settings.resolved_backend == "supabase":
        return url_endpoint(settings.supabase_url)
    return url_endpoint(plain_secret(settings.database_url))
