"""`notifier export`: jobs (optionally with their delivery logs) as JSON Lines, for forensics.

Rows are streamed through a server-side cursor, so memory stays flat whatever the size, and
serialized by Postgres itself (`to_jsonb`), so each line is exactly the row as stored. Rows come
in table order (no sort, which would read the whole selection before the first line).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import IO, Any

import psycopg

from notifier.operations.db_state import connect

FETCH_ROWS = 2000

_FILTER = """
  from notification_jobs j
 where (%(statuses)s::text[] is null or j.status = any(%(statuses)s::text[]))
   and (%(since)s::timestamptz is null or j.created_at >= %(since)s::timestamptz)
"""
_COUNT = "select count(*) as n" + _FILTER
_ROWS = (
    """
select (to_jsonb(j) || case when %(with_logs)s then jsonb_build_object('delivery_logs',
          coalesce((select jsonb_agg(to_jsonb(l) order by l.delivery_time, l.created_at)
                      from notification_delivery_logs l where l.job_id = j.id), '[]'::jsonb))
        else '{}'::jsonb end)::text as line"""
    + _FILTER
)


def export_jobs(
    database_url: str,
    out: IO[str],
    *,
    statuses: Sequence[str] = (),
    since: datetime | None = None,
    with_logs: bool = False,
    on_start: Callable[[int], None] = lambda _total: None,
    on_rows: Callable[[int], None] = lambda _n: None,
) -> int:
    """Write one JSON object per job to `out`; returns how many were written.

    `on_start(total)` gets the number of matching jobs first (for a progress bar), then
    `on_rows(n)` after every batch of `n` lines.
    """
    params: dict[str, Any] = {
        "statuses": list(statuses) or None,
        "since": since,
        "with_logs": with_logs,
    }
    written = 0
    conn = connect(database_url, connect_timeout=5.0, application_name="notifier-export")
    try:
        count = conn.execute(_COUNT, params).fetchone()
        on_start(int(count["n"]) if count else 0)
        conn.autocommit = False  # a server-side cursor lives in a transaction
        with conn.transaction(), conn.cursor(name="notifier_export", row_factory=_line) as cur:
            cur.itersize = FETCH_ROWS
            cur.execute(_ROWS, params)
            while batch := cur.fetchmany(FETCH_ROWS):
                out.writelines(line + "\n" for line in batch)
                written += len(batch)
                on_rows(len(batch))
    finally:
        conn.close()
    return written


def _line(cursor: psycopg.Cursor[Any]) -> Callable[[Sequence[Any]], str]:
    def make(values: Sequence[Any]) -> str:
        return str(values[0])

    return make
