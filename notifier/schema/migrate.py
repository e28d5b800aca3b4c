"""`notifier migrate`: apply the migrations (*.sql) in order, once each, and record them.

The files live in `supabase/migrations/`, where `supabase db push` reads them unchanged; the
package reaches them as `notifier/schema/migrations` (a symlink in the checkout, real files in a
wheel), so an installed notifier carries its schema. This runner exists for plain PostgreSQL. An
advisory lock makes concurrent runs wait for each other instead of racing.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import tuple_row

# Package data: in a checkout a symlink to supabase/migrations, in an installed wheel the files.
MIGRATIONS_DIR = Path(str(importlib.resources.files("notifier.schema") / "migrations"))
_LOCK_KEY = 0x6E6F7469  # "noti": one advisory lock for all notifier migration runs

# The bookkeeping table is defined once, in the migration that creates it (where `supabase db
# push` creates it too, for the grants and policies that follow). `apply` runs that statement
# before the first migration, so even the first one is recorded in its own transaction.
_BOOKKEEPING = re.compile(
    r"^create table if not exists notifier_schema_migrations \(.*?^\);", re.I | re.M | re.S
)


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files, oldest first; the version is the timestamp before the first `_`."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        version, _, name = path.stem.partition("_")
        found.append(Migration(version=version, name=name, path=path))
    return found


def bookkeeping_table_sql() -> str:
    """The `create table if not exists notifier_schema_migrations (...)` statement of notifier's
    own migrations (whatever directory is being applied: the table is notifier's)."""
    for migration in discover(MIGRATIONS_DIR):
        if match := _BOOKKEEPING.search(migration.sql):
            return match.group(0)
    raise RuntimeError(
        f"no migration in {MIGRATIONS_DIR} creates notifier_schema_migrations: the package is "
        "incomplete; reinstall notifier"
    )


def applied_versions(conn: psycopg.Connection[Any]) -> set[str]:
    return set(_recorded(conn))


def changed_since_applied(
    conn: psycopg.Connection[Any], directory: Path = MIGRATIONS_DIR
) -> list[Migration]:
    """Applied migrations whose file no longer matches what was applied (edited afterwards):
    the database keeps the old definitions, so the schema may differ from the files."""
    recorded = _recorded(conn)
    return [m for m in discover(directory) if recorded.get(m.version, m.checksum) != m.checksum]


def _recorded(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Applied versions and their checksums (none before the first `notifier migrate`)."""
    cursor = conn.cursor(row_factory=tuple_row)
    exists = cursor.execute("select to_regclass('public.notifier_schema_migrations')").fetchone()
    if exists is None or exists[0] is None:
        return {}
    rows = cursor.execute("select version, checksum from notifier_schema_migrations").fetchall()
    return {str(version): str(checksum) for version, checksum in rows}


def pending(database_url: str, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Migrations not yet recorded in the database (what `--dry-run` prints)."""
    with psycopg.connect(database_url) as conn:
        done = applied_versions(conn)
    return [m for m in discover(directory) if m.version not in done]


def apply(
    database_url: str,
    directory: Path = MIGRATIONS_DIR,
    on_applied: Callable[[Migration], None] = lambda _m: None,
) -> list[Migration]:
    """Apply every pending migration, each in its own transaction; return those applied."""
    applied: list[Migration] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(bookkeeping_table_sql().encode("utf-8"))
            done = applied_versions(conn)
            for migration in discover(directory):
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode("utf-8"))
                    conn.execute(
                        "insert into notifier_schema_migrations (version, name, checksum) "
                        "values (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                applied.append(migration)
                on_applied(migration)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied
