"""`FunctionCaller` over the Supabase REST API (supabase-py `rpc()`, i.e. PostgREST's
`POST /rest/v1/rpc/<function>`), for deployments that have SUPABASE_URL and
SUPABASE_SERVICE_ROLE_KEY but no database password or route to the database.

One HTTP client per caller, with a bounded connection pool and NOTIFIER_DB_TIMEOUT as its
timeout: a worker or poller keeps one for its life; a short read (a health probe, a metrics
scrape, an ops command) opens its own and closes it (`store.backend.short_caller`), one TLS
handshake per probe. PostgREST's errors become notifier's own (store errors in
notifier/errors.py). Only reads are retried here (`SAFE_TO_REPEAT`): repeating them changes
nothing. A state change is never repeated blindly: if its answer is lost, the lease it took or
left decides (the reaper returns the job), and the caller's loop tries again later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx
from postgrest.exceptions import APIError

from notifier.errors import (
    StoreAuthError,
    StoreError,
    StoreFunctionMissingError,
    StoreUnavailableError,
)
from notifier.store.model import SAFE_TO_REPEAT
from supabase import Client, ClientOptions, create_client

# Pauses before the second, third and fourth try of a read that met a transient error.
READ_RETRY_PAUSES = (0.2, 0.5, 1.0)
TRANSIENT_STATUSES = frozenset({502, 503, 504, 520})
# PostgREST's own codes for "the database is not there right now" (connection, schema cache),
# and Postgres classes that mean the same: 08 connection, 53 resources, 57014 cancelled.
TRANSIENT_CODES = frozenset({"PGRST000", "PGRST001", "PGRST002", "PGRST003", "57014"})
TRANSIENT_CLASSES = ("08", "53", "57P")
AUTH_CODES = frozenset({"PGRST301", "PGRST302", "PGRST303", "42501"})


class RestCaller:
    """Calls notifier's SQL functions through the Supabase REST API."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: float,
        pool_size: int = 10,
        transport: httpx.BaseTransport | None = None,
        read_retry_pauses: tuple[float, ...] = READ_RETRY_PAUSES,
    ) -> None:
        self._timeout = timeout
        self._read_retry_pauses = read_retry_pauses
        self._status = threading.local()  # the HTTP status of this thread's last answer
        self._http = httpx.Client(
            timeout=timeout,
            limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
            transport=transport,
            event_hooks={"response": [self._remember_status]},
        )
        options = ClientOptions(
            postgrest_client_timeout=timeout,
            httpx_client=self._http,  # its timeout and bounded pool serve every call
            auto_refresh_token=False,
            persist_session=False,
        )
        self._client: Client = create_client(url, key, options=options)

    def call(self, function: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        pauses = self._read_retry_pauses if function in SAFE_TO_REPEAT else ()
        for pause in pauses:
            try:
                return self._call_once(function, params)
            except StoreUnavailableError:
                time.sleep(pause)
        return self._call_once(function, params)

    def check(self) -> None:
        """Raise now if the key is refused or the migrations are missing (start-up)."""
        self.call("notifier_ping", {})

    def close(self) -> None:
        self._http.close()

    def _call_once(self, function: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        self._status.value = None
        try:
            response = self._client.rpc(function, dict(params)).execute()
        except APIError as error:
            raise api_error(function, error, self._status.value) from None
        except httpx.TimeoutException:
            raise StoreUnavailableError(
                f"the Supabase REST API gave no answer to {function} within {self._timeout:g} s "
                "(NOTIFIER_DB_TIMEOUT)",
                code="timeout",
            ) from None
        except httpx.TransportError as error:
            raise StoreUnavailableError(
                f"cannot reach the Supabase REST API ({type(error).__name__}: {error})",
                code="unreachable",
            ) from None
        return rows(function, response.data)

    def _remember_status(self, response: httpx.Response) -> None:
        self._status.value = response.status_code


def rows(function: str, data: Any) -> list[dict[str, Any]]:
    """PostgREST's answer as the rows psycopg's `select * from fn(...)` gives: a set or table
    is an array of objects; a scalar comes bare (or an array of bare values for `setof`) and
    becomes a column named after the function; a single composite is one object; `void`
    answers nothing."""
    if isinstance(data, list):
        return [row if isinstance(row, dict) else {function: row} for row in data]
    if isinstance(data, dict):
        return [data]
    return [{function: data}]


def api_error(function: str, error: APIError, status: int | None) -> StoreError:
    """PostgREST's `{code, message, details, hint}` (and the HTTP status) as notifier's error."""
    code = error.code or (str(status) if status else None)
    message = error.message or "(no message)"
    if status in (401, 403) or code in AUTH_CODES:
        return StoreAuthError(
            f"the Supabase REST API refused the key calling {function} ({status or code}: "
            f"{message}): set SUPABASE_SERVICE_ROLE_KEY to the project's service_role key "
            "(Project Settings → API), not the anon key",
            code=code,
        )
    if code == "PGRST202" or status == 404:
        return StoreFunctionMissingError(
            f"{function}() is not in the Supabase API's schema cache ({code}): apply "
            f"{migration_defining(function)} (`supabase db push`), then reload the schema "
            "cache (`NOTIFY pgrst, 'reload schema'`)",
            code=code,
        )
    if (
        status in TRANSIENT_STATUSES
        or code in TRANSIENT_CODES
        or (code is not None and code.startswith(TRANSIENT_CLASSES))
    ):
        return StoreUnavailableError(
            f"the Supabase REST API could not run {function} ({status or code}: {message})",
            code=code,
        )
    # Notifier's own refusals (P0001, 22023) keep their message: it is written for people.
    return StoreError(message, code=code)


def migration_defining(function: str) -> str:
    """The migration file that creates `function`, for the error that says it is missing."""
    from notifier.schema.migrate import discover

    needle = f"function {function}("
    for migration in discover():
        if needle in migration.path.read_text().lower():
            return f"supabase/migrations/{migration.path.name}"
    return "notifier's migrations"
