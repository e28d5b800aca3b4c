"""Reads that are not a snapshot: the job export stream. (The snapshot reader for health,
metrics and status is notifier/store/snapshot.py; a job's status is `JobStore.job_statuses`.)
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from notifier.store.queries import query
from notifier.store.session import DictConnection


@dataclass(frozen=True)
class ExportFilter:
    """Which jobs `notifier export` writes: these statuses (all when empty), created since."""

    statuses: Sequence[str] = ()
    since: datetime | None = None
    with_logs: bool = False

    def params(self) -> dict[str, Any]:
        return {
            "statuses": list(self.statuses) or None,
            "since": self.since,
            "with_logs": self.with_logs,
        }


def count_export(conn: DictConnection, selection: ExportFilter) -> int:
    row = conn.execute(query("export_count"), selection.params()).fetchone()
    return int(row["n"]) if row else 0


def stream_export(
    conn: DictConnection, selection: ExportFilter, batch_rows: int
) -> Generator[list[str], None, None]:
    """Each job as one JSON line (serialized by Postgres: exactly the row as stored), in
    batches of `batch_rows`, through a server-side cursor so memory stays flat.

    The cursor lives in a transaction, so the connection leaves autocommit for good.
    """
    conn.autocommit = False
    with conn.transaction(), conn.cursor(name="notifier_export", row_factory=_line) as cur:
        cur.itersize = batch_rows
        cur.execute(query("export_rows"), selection.params())
        while batch := cur.fetchmany(batch_rows):
            yield batch


def _line(cursor: psycopg.Cursor[Any]) -> Callable[[Sequence[Any]], str]:
    def make(values: Sequence[Any]) -> str:
        return str(values[0])

    return make
