"""`notifier export`: jobs (optionally with their delivery logs) as JSON Lines, for forensics.

Rows are streamed through a server-side cursor, so memory stays flat whatever the size, and
serialized by Postgres itself (`to_jsonb`), so each line is exactly the row as stored. Rows come
in table order (no sort, which would read the whole selection before the first line). The
queries are notifier/store/reads.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import datetime
from typing import IO

from notifier.store.reads import ExportFilter, count_export, stream_export
from notifier.store.session import connect

FETCH_ROWS = 2000


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
    selection = ExportFilter(statuses=statuses, since=since, with_logs=with_logs)
    written = 0
    conn = connect(database_url, connect_timeout=5.0, application_name="notifier-export")
    try:
        on_start(count_export(conn, selection))
        with closing(stream_export(conn, selection, FETCH_ROWS)) as batches:
            for batch in batches:
                out.writelines(line + "\n" for line in batch)
                written += len(batch)
                on_rows(len(batch))
    finally:
        conn.close()
    return written
