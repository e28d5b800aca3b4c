"""The README's "Your first real notification" SQL runs as written, in order, on a migrated
database, and does what the README says it does."""

from __future__ import annotations

import re
from typing import Any

import psycopg

from tests.integration.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    """From the `## title` heading to the next heading of the same level."""
    start = README.index(f"\n## {title}\n")
    following = README.find("\n## ", start + 1)
    return README[start : following if following != -1 else None]


def sql_blocks(text: str) -> list[str]:
    return re.findall(r"```sql\n(.*?)```", text, flags=re.S)


def test_the_first_notification_walkthrough_runs_and_holds_the_digest_item(
    db: psycopg.Connection[Any],
) -> None:
    blocks = sql_blocks(section("Your first real notification"))
    assert len(blocks) == 3
    for block in blocks:
        db.execute(block)

    jobs = db.execute(
        "select content ->> 'subject' as subject, status, delivery_method "
        "from notification_jobs order by created_at, content ->> 'subject'"
    ).fetchall()
    by_subject = {job["subject"]: job["status"] for job in jobs}
    assert by_subject == {"Welcome to the family album": "pending", "New photo": "held"}
    schedule = db.execute("select next_digest_scheduled from digest_schedules").fetchone()
    assert schedule is not None and schedule["next_digest_scheduled"] is not None
    channels = db.execute("select effective_channels from notification_preferences_cache").fetchone()
    assert channels is not None and channels["effective_channels"] == ["email", "sms"]
