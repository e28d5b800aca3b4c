"""One short-lived PostgreSQL connection for the operator's side (status, health, metrics,
export, the ops commands): connected with a deadline, every transaction bounded by a statement
timeout, and a `FunctionCaller` over it so `JobStore` works on the same connection.

The workers' long-lived pool is notifier/store/postgres.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from notifier.store.postgres import adapt_argument, function_call_query
from notifier.store.queries import query

DictConnection = psycopg.Connection[dict[str, Any]]
OPS_STATEMENT_TIMEOUT = 300.0  # a bulk retry or cleanup may touch many rows


def connect(
    database_url: str, *, connect_timeout: float, application_name: str = "notifier-ops"
) -> DictConnection:
    """An autocommit connection with dict rows that gives up on time.

    No `options` startup parameter: PgBouncer and Supavisor (Supabase's pooler, port 6543)
    reject or drop it, so statement timeouts are set per transaction by `bounded`.
    libpq waits at least 2 s to connect whatever `connect_timeout` says; callers that must
    answer sooner run this in a thread with their own deadline (notifier/operations/probes.py).
    """
    return psycopg.connect(
        database_url,
        autocommit=True,
        row_factory=dict_row,
        connect_timeout=max(2, math.ceil(connect_timeout)),
        application_name=application_name,
    )


@contextmanager
def bounded(conn: DictConnection, statement_timeout: float) -> Iterator[DictConnection]:
    """A transaction whose statements Postgres cancels after `statement_timeout` seconds.

    `set_config(..., true)` is transaction-local, so it holds behind a transaction pooler too
    and never outlives the transaction on a pooled server connection.
    """
    with conn.transaction():
        milliseconds = max(1, int(statement_timeout * 1000))
        conn.execute(query("set_statement_timeout"), {"timeout": f"{milliseconds}ms"})
        yield conn


class ConnectionCaller:
    """`FunctionCaller` over one connection (see notifier/store/base.py); each call is its own
    transaction, cancelled after `statement_timeout` seconds."""

    def __init__(
        self, conn: DictConnection, statement_timeout: float = OPS_STATEMENT_TIMEOUT
    ) -> None:
        self._conn = conn
        self._statement_timeout = statement_timeout

    def call(self, function: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        sql = function_call_query(function, tuple(params))
        values = {name: adapt_argument(value) for name, value in params.items()}
        with bounded(self._conn, self._statement_timeout):
            return self._conn.execute(sql, values).fetchall()

    def close(self) -> None:
        self._conn.close()
