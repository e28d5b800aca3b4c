"""`FunctionCaller` over a direct PostgreSQL connection (psycopg 3, pooled)."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from psycopg import Connection, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb, set_json_loads
from psycopg_pool import ConnectionPool

from notifier.store.base import UnreadableJson


class PostgresCaller:
    """Calls notifier's SQL functions with named arguments over a small connection pool."""

    def __init__(
        self, database_url: str, *, max_size: int = 10, prepare: bool | None = None
    ) -> None:
        self._prepare = uses_prepared_statements(database_url) if prepare is None else prepare
        self._pool = ConnectionPool(
            database_url,
            min_size=1,
            max_size=max_size,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "prepare_threshold": 5 if self._prepare else None,
            },
            configure=_decode_json_safely,
            open=True,
            name="notifier",
        )

    def call(self, function: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        query = function_call_query(function, tuple(params))
        values = {name: adapt_argument(value) for name, value in params.items()}
        with self._pool.connection() as conn:
            rows = conn.execute(query, values, prepare=self._prepare or None)
            return rows.fetchall()

    def close(self) -> None:
        self._pool.close()


def uses_prepared_statements(database_url: str) -> bool:
    """Prepared statements save planning on every call, but a transaction-mode pooler (Supabase's
    on port 6543, PgBouncer) hands each transaction a different server connection, where they
    do not exist. Off on port 6543; set NOTIFIER_DB_PREPARED_STATEMENTS for other poolers."""
    return conninfo_to_dict(database_url).get("port") != "6543"


@functools.cache
def function_call_query(function: str, parameter_names: tuple[str, ...]) -> bytes:
    """`select * from fn(a => %(a)s, ...)`, composed once per function and argument set."""
    arguments = sql.SQL(", ").join(
        sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder(name))
        for name in parameter_names
    )
    query = sql.SQL("select * from {}({})").format(sql.Identifier(function), arguments)
    return query.as_bytes(None)


def adapt_argument(value: Any) -> Any:
    """JSON-able dicts and lists become jsonb; everything else goes as it is."""
    return Jsonb(value) if isinstance(value, dict | list) else value


def loads_or_unreadable(data: str | bytes) -> Any:
    try:
        return json.loads(data)
    except RecursionError:
        return UnreadableJson("JSON nested too deeply to decode")


def _decode_json_safely(conn: Connection[Any]) -> None:
    set_json_loads(loads_or_unreadable, conn)
