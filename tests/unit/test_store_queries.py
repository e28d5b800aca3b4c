"""The named-query file: every query documented and used, every name the store asks for
defined; and the status groupings of notifier/store/model.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from notifier.store import queries
from notifier.store.model import FINISHED, UNFINISHED, JobStatus
from notifier.store.queries import QUERIES, parse

STORE = Path(queries.__file__).parent


def test_a_query_is_read_under_its_header_with_its_comment() -> None:
    text = "-- intro\n\n-- one --\n-- what one is for\nselect 1\n\n-- two --\n-- for two\nselect 2\n"
    assert parse(text) == {"one": "-- what one is for\nselect 1", "two": "-- for two\nselect 2"}


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("-- one --\nselect 1\n", "one-line comment"),
        ("-- one --\n-- why\nselect 1\n-- one --\n-- why\nselect 1\n", "defined twice"),
        ("-- one --\n-- why\n", "no SQL"),
    ],
)
def test_an_undocumented_duplicate_or_empty_query_is_refused(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse(text)


def test_every_query_is_used_and_every_used_query_exists() -> None:
    used = {
        name
        for path in STORE.glob("*.py")
        for name in re.findall(r'\bquery\("([a-z0-9_]+)"\)', path.read_text())
    }
    assert used == set(QUERIES)


def test_no_sql_is_run_outside_the_store() -> None:
    """The operations modules read through the store: none holds a query of its own."""
    operations = STORE.parent / "operations"
    for path in operations.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"\bconn\w*\.execute\(|\bfrom (notification_|notifier_)", text), path.name


def test_every_status_is_finished_or_not_and_never_both() -> None:
    assert set(FINISHED) | set(UNFINISHED) == set(JobStatus)
    assert not set(FINISHED) & set(UNFINISHED)
    assert UNFINISHED == ("pending", "queued", "processing", "held")
