"""`notifier scheduler`: run the digest pass every NOTIFIER_DIGEST_INTERVAL seconds.

The pass itself is the SQL function `create_digest_jobs()` (supabase/migrations/
20261124000600_digests.sql): schedule arithmetic, locking and bundling live there only, so this
loop and a pg_cron job calling the same function cannot disagree. Any number of schedulers may
run at once: due schedules are locked with SKIP LOCKED and each period gets at most one digest.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from notifier.log import event
from notifier.store import JobStore

logger = logging.getLogger("notifier.digests.scheduler")


class DigestScheduler:
    """Calls the digest pass on a fixed cadence until stopped."""

    def __init__(
        self,
        store: JobStore,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._interval = interval
        self._clock = clock
        self._stopping = threading.Event()
        self._parked: int | None = None  # last count logged

    def stop(self) -> None:
        """Let the pass in progress finish (it is one transaction), then return (SIGTERM)."""
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            event(logger, "scheduler_stopping", signal=signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run_once(self) -> int:
        """One pass; returns how many digest jobs it created."""
        started = self._clock()
        created = self._store.create_digest_jobs()
        event(
            logger,
            "digest_pass_done",
            created=created,
            duration_ms=round((self._clock() - started) * 1000),
        )
        self._report_parked()
        return created

    def _report_parked(self) -> None:
        """Log the number of parked schedules whenever it changes: their recipients get each
        notification on its own until someone corrects them (docs/digests.md)."""
        parked = self._store.parked_digest_schedules()
        if parked != self._parked and (parked or self._parked):
            event(
                logger,
                "digest_schedules_parked",
                logging.WARNING if parked else logging.INFO,
                count=parked,
                hint="see digest_settings.last_error; docs/digests.md, Parked schedules",
            )
        self._parked = parked

    def run(self, *, burst: bool = False) -> int:
        """Run passes until stopped (`burst`: one pass, then return); returns digests created.

        Passes start every `interval` seconds from the previous start, so a slow pass does not
        push later ones back. A failed pass is logged and retried at the next interval, since
        the database being briefly away must not stop digests for good; in burst mode it
        raises, so the exit code tells.
        """
        event(logger, "scheduler_started", interval=self._interval, burst=burst)
        total = 0
        while not self._stopping.is_set():
            next_start = self._clock() + self._interval
            try:
                total += self.run_once()
            except Exception as error:
                if burst:
                    raise
                logger.exception(
                    "digest_pass_failed", extra={"notifier_fields": {"error": type(error).__name__}}
                )
            if burst:
                break
            self._stopping.wait(max(0.0, next_start - self._clock()))
        event(logger, "scheduler_stopped", created=total)
        return total
