"""Every digest is bounded, however large its held items: items, bytes per item, bytes in all.
One user's 65 MB digest once took a worker to 920 MB."""

from __future__ import annotations

from notifier.pipeline.render import Renderer, default_template_dir
from tests.integration import seed
from tests.integration.test_digests import (
    Db,
    add_schedule,
    digest_jobs,
    digest_pass,
    enqueue,
    make_due,
)


def test_a_digest_of_huge_items_is_cut_and_counts_the_rest(db: Db) -> None:
    ids = seed.add_recipient(db)
    schedule = add_schedule(db, ids["recipient"], ids["group"], max_updates_per_digest=1000)
    for n in range(120):
        enqueue(db, ids, subject=f"{n} " + "S" * 60000, body="B" * 1000,
                url="https://example.com/" + "u" * 3000)  # fmt: skip
    make_due(db, schedule)
    assert digest_pass(db) == 1
    [digest] = digest_jobs(db)
    size = db.execute(
        "select octet_length(content::text) as n from notification_jobs where id = %s",
        (digest["id"],),
    ).fetchone()
    assert size is not None and size["n"] < 64 * 1024
    content = digest["content"]
    assert content["item_count"] == 100  # at most notification_digest_max_items()
    shown = content["items"]
    assert 1 <= len(shown) < 100
    assert all(len(item["subject"]) <= 200 and item["subject"].endswith("…") for item in shown)
    assert all(len(item["body"]) <= 300 for item in shown)
    assert all("url" not in item for item in shown)  # a cut link would be broken: left out
    held = db.execute(
        "select count(*) as n from notification_jobs where status = 'held' and recipient_id = %s",
        (ids["recipient"],),
    ).fetchone()
    assert held == {"n": 20}  # past the item limit: the next digest's

    context = {
        "content": content,
        "recipient": {"name": "Ada", "timezone": "UTC"},
        "group": {"name": "Family"},
        "preferences_url": None,
        "unsubscribe_url": None,
    }
    text = Renderer(default_template_dir()).email("digest", context).text
    assert f"...and {100 - len(shown)} more." in text


def test_one_huge_item_still_shows(db: Db) -> None:
    ids = seed.add_recipient(db)
    schedule = add_schedule(db, ids["recipient"], ids["group"])
    enqueue(db, ids, subject="S" * 60000)
    make_due(db, schedule)
    assert digest_pass(db) == 1
    [digest] = digest_jobs(db)
    assert digest["content"]["item_count"] == 1
    assert len(digest["content"]["items"][0]["subject"]) == 200
