"""Rows the tests need: owners, recipients, groups, preferences."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg


def add_recipient(
    db: psycopg.Connection[Any],
    *,
    owner: str | None = None,
    name: str = "Ada",
    email: str | None = "ada@example.com",
    phone: str | None = "+15005550006",
    is_active: bool = True,
    timezone: str = "UTC",
) -> dict[str, str]:
    """Insert an owner's recipient and a group of theirs; returns their ids."""
    owner = owner or str(uuid.uuid4())
    recipient = db.execute(
        "insert into recipients (parent_id, name, email, phone, is_active, timezone) "
        "values (%s, %s, %s, %s, %s, %s) returning id",
        (owner, name, email, phone, is_active, timezone),
    ).fetchone()
    group = db.execute(
        "insert into recipient_groups (parent_id, name) values (%s, %s) returning id",
        (owner, f"{name}'s family"),
    ).fetchone()
    assert recipient is not None and group is not None
    return {"owner": owner, "recipient": str(_first(recipient)), "group": str(_first(group))}


def set_preferences(db: psycopg.Connection[Any], recipient_id: str, **values: Any) -> None:
    columns = ", ".join(values)
    placeholders = ", ".join(["%s"] * len(values))
    db.execute(
        f"insert into notification_preferences_cache (recipient_id, {columns}) "
        f"values (%s, {placeholders})",
        (recipient_id, *values.values()),
    )


def job(db: psycopg.Connection[Any], job_id: str) -> dict[str, Any]:
    row = db.execute("select * from notification_jobs where id = %s", (job_id,)).fetchone()
    assert row is not None, f"job {job_id} not found"
    return dict(row) if not isinstance(row, dict) else row


def logs(db: psycopg.Connection[Any], job_id: str) -> list[dict[str, Any]]:
    rows = db.execute(
        "select * from notification_delivery_logs where job_id = %s order by created_at, attempt",
        (job_id,),
    ).fetchall()
    return [dict(r) for r in rows]


def _first(row: Any) -> Any:
    return row["id"] if isinstance(row, dict) else row[0]
