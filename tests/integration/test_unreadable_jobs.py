"""A job whose stored content cannot be read (legacy rows: `content` an array, `metadata` a
string, JSON nested thousands deep) fails alone, at once, with a readable reason: not an
unknown outcome, not a whole lease of waiting, and the other jobs of its RQ job go out."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from notifier.pipeline.delivery import Deliverer
from notifier.pipeline.render import Renderer, default_template_dir
from notifier.providers.sendgrid import SendGridProvider
from notifier.store import JobStore
from tests.integration import seed
from tests.integration.test_delivery_outcomes import POLICY, enqueue
from tests.support.loopback import SendGridLoopback


@pytest.fixture
def deliverer(store: JobStore, sendgrid: SendGridLoopback) -> Deliverer:
    provider = SendGridProvider("SG.key", "from@example.com", base_url=sendgrid.base_url, timeout=2)
    return Deliverer(store, {"email": provider}, {}, Renderer(default_template_dir()), POLICY)


DEEP = "[" * 2000 + "1" + "]" * 2000


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("content", '["a", "b"]', "content is a JSON array, not an object"),
        ("metadata", '"just text"', "metadata is a JSON string, not an object"),
        ("content", '{"body": "hi", "deep": ' + DEEP + "}", "cannot be read"),
    ],
)
def test_an_unreadable_job_fails_alone_with_a_reason(
    db: psycopg.Connection[Any],
    store: JobStore,
    deliverer: Deliverer,
    sendgrid: SendGridLoopback,
    column: str,
    value: str,
    reason: str,
) -> None:
    recipient = seed.add_recipient(db)["recipient"]
    broken, fine = enqueue(db, recipient, n=2)
    db.execute(
        psycopg.sql.SQL("update notification_jobs set {} = %s::jsonb where id = %s").format(
            psycopg.sql.Identifier(column)
        ),
        (value, broken),
    )
    outcome = deliverer.deliver_batch(store.claim(10, POLICY.lease_seconds))
    assert outcome == {"failed": 1, "sent": 1}
    job = db.execute(  # not seed.job: Python cannot decode the deep content either
        "select status, failure_reason from notification_jobs where id = %s", (broken,)
    ).fetchone()
    assert job is not None and job["status"] == "failed"
    assert reason in job["failure_reason"]
    assert "outcome unknown" not in job["failure_reason"]
    logs = db.execute(
        "select status from notification_delivery_logs where job_id = %s", (broken,)
    ).fetchall()
    assert [log["status"] for log in logs] == ["failed"]
    assert seed.job(db, fine)["status"] == "sent"
