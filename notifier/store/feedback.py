"""What notifier says to the database about delivery feedback: provider events, the suppression
list and one-click unsubscribes, each one SQL function of 20261201000400_delivery_feedback.sql.

Apart from `JobStore` because none of it is a job state change: the web process (webhooks,
unsubscribe) and the `notifier suppressions` command use this alone. The suppression itself is
applied where a job's attempt starts (`start_notification_attempts`), in SQL.
"""

from __future__ import annotations

from typing import Any

from notifier.store.base import FunctionStore


class FeedbackStore(FunctionStore):
    """Typed wrappers around the feedback functions; values come back as plain Python."""

    def record_events(self, provider: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Record one verified webhook batch in one call: a delivery-log row per new event of a
        known job, suppressions for the events that call for one. Returns the counts
        (`received`, `recorded`, `duplicates`, `suppressed`, `uncorrelated`) and
        `unknown_job_ids`."""
        result = self._scalar(
            "record_notification_delivery_events", p_provider=provider, p_events=events
        )
        return dict(result or {})

    def suppressions(self, channel: str | None = None) -> list[dict[str, Any]]:
        """The suppression list, newest first, optionally of one channel."""
        rows = self._caller.call("list_notification_suppressions", {"p_channel": channel})
        return [dict(row) for row in rows]

    def add_suppression(
        self,
        channel: str,
        address: str,
        reason: str,
        source: str = "operator",
        provider_event_id: str | None = None,
    ) -> bool:
        """Suppress the address on the channel; False when it already was (its first reason
        stays)."""
        return bool(
            self._scalar(
                "add_notification_suppression",
                p_channel=channel,
                p_address=address,
                p_reason=reason,
                p_source=source,
                p_provider_event_id=provider_event_id,
            )
        )

    def remove_suppression(
        self, channel: str, address: str, reason_prefix: str | None = None
    ) -> bool:
        """Lift a suppression (only one whose reason starts with `reason_prefix`, if given);
        False when there was none."""
        return bool(
            self._scalar(
                "remove_notification_suppression",
                p_channel=channel,
                p_address=address,
                p_reason_prefix=reason_prefix,
            )
        )

    def unsubscribe_target(self, preference_token: str) -> dict[str, Any] | None:
        """Who an unsubscribe link belongs to (`name`, `email`, `suppressed`), or None when the
        token is unknown. Reads only."""
        target = self._scalar(
            "notification_unsubscribe_target", p_preference_token=preference_token
        )
        return None if target is None else dict(target)

    def unsubscribe(self, preference_token: str) -> dict[str, Any] | None:
        """Suppress the email address of the token's recipient (`email`, `added`), or None
        when the token is unknown."""
        result = self._scalar(
            "unsubscribe_notification_recipient", p_preference_token=preference_token
        )
        return None if result is None else dict(result)
