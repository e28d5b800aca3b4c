"""Pure adoption logic: reading BullMQ's fields into a verdict, masking the old queue's URL."""

from __future__ import annotations

import pytest

from notifier.adoption.adopt import verdict
from notifier.adoption.bullmq import OldJob, masked


@pytest.mark.parametrize(
    ("state", "fields", "expected"),
    [
        ("completed", {"returnvalue": '{"success": true, "messageId": "m1"}'}, ("sent", "m1", None)),
        ("completed", {"returnvalue": '{"success": false, "error": "bad"}'}, ("failed", None, "bad")),
        ("completed", {"returnvalue": "not json"}, ("unknown", None, None)),
        ("failed", {"failedReason": "boom", "atm": "3"}, ("failed", None, "boom")),
        ("delayed", {}, ("pending", None, None)),
        ("delayed", {"atm": "1"}, ("unknown", None, None)),  # an attempt may have gone out
        ("waiting", {"ats": "1"}, ("unknown", None, None)),  # stalled back to waiting
        ("active", {"ats": "2", "atm": "1"}, ("unknown", None, None)),
    ],
)  # fmt: skip
def test_verdict_reads_bullmqs_fields(
    state: str, fields: dict[str, str], expected: tuple[str, str | None, str | None]
) -> None:
    result = verdict("j", OldJob("j", state, fields))
    assert (result.outcome, result.message_id, result.reason) == expected
    assert result.remove == (state in ("delayed", "waiting", "active"))
    assert verdict("j", None).outcome == "unknown" and not verdict("j", None).remove


def test_masked_hides_the_old_queues_url_and_its_password() -> None:
    url = "redis://worker:p%40ss-w0rd@redis.internal:6379/0"
    text = f"cannot reach {url}; AUTH p@ss-w0rd refused; AUTH p%40ss-w0rd refused"
    assert masked(text, url) == (
        "cannot reach redis://worker:***@redis.internal:6379/0; AUTH *** refused; AUTH *** refused"
    )
