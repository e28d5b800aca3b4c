"""`notifier handback`: give the queue back to the original worker (the rollback).

`hand_back_notification_jobs` pauses claims and, in the same transaction, returns every row in
a status the original worker does not know to one it does (queued → pending, held → pending,
digested → its digest job's final status, or skipped while that job is not finished;
processing past its lease as the reaper decides). What notifier workers are
sending at that moment stays `processing` until they record its outcome, so the function is
called again until nothing is in flight or the timeout passes. Running it twice is harmless.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from notifier.store import JobStore


@dataclass
class HandbackReport:
    moved: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0

    @property
    def complete(self) -> bool:
        return self.in_flight == 0

    def render(self) -> str:
        lines = ["claims paused (paused_by: notifier handback); notifier claims nothing more"]
        if self.moved:
            width = max(len(label) for label in self.moved) + 2
            lines += [f"{label.ljust(width)}{n:>6}" for label, n in sorted(self.moved.items())]
        else:
            lines.append("nothing to hand back: every job has a status the original worker knows")
        if self.complete:
            lines.append("done: start the original worker (pm2 start notification-worker)")
        else:
            lines.append(
                f"{self.in_flight} job(s) are still being sent by notifier workers. Let them "
                "finish (or stop the workers and let their leases expire), then run notifier "
                "handback again before starting the original worker"
            )
        return "\n".join(lines)


def hand_back(
    store: JobStore,
    *,
    unknown_outcome: str,
    timeout: float,
    interval: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> HandbackReport:
    """Hand back, waiting up to `timeout` seconds for the attempts in flight to finish."""
    report = HandbackReport()
    deadline = clock() + timeout
    while True:
        counts = store.hand_back(unknown_outcome)
        report.in_flight = counts.pop("in_flight", 0)
        report.moved.update({label: n for label, n in counts.items() if n})
        remaining = deadline - clock()
        if report.complete or remaining <= 0:
            return report
        sleep(min(interval, remaining))
