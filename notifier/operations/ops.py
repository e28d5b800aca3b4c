"""The operator's actions: pause and resume claiming, drain, retry failed jobs, cancel jobs,
clean up old rows. Each state change is a SQL function called through `JobStore`, over one
connection (on the REST backend, one HTTP client) that fails fast (an operator at a terminal
wants an error now, not a pool that retries for half a minute).
"""

from __future__ import annotations

import getpass
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from notifier.config import Settings
from notifier.store import FunctionCaller, JobStore
from notifier.store.backend import short_caller
from notifier.store.session import OPS_STATEMENT_TIMEOUT
from notifier.store.snapshot import read_snapshot

OPS_CONNECT_TIMEOUT = 5.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


@contextmanager
def open_store(settings: Settings) -> Iterator[tuple[JobStore, FunctionCaller]]:
    """A job store and its caller (for reads), over DATABASE_URL or the REST API; closed on
    exit."""
    with short_caller(
        settings,
        application_name="notifier-ops",
        connect_timeout=OPS_CONNECT_TIMEOUT,
        statement_timeout=OPS_STATEMENT_TIMEOUT,
    ) as caller:
        yield JobStore(caller), caller


def operator() -> str:
    """`user@host`, recorded with a pause so the next on-call knows whom to ask."""
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class InFlight:
    queued: int
    processing: int

    @property
    def total(self) -> int:
        return self.queued + self.processing


def in_flight(reader: FunctionCaller) -> InFlight:
    backlog = read_snapshot(reader).backlog
    return InFlight(queued=backlog.queued, processing=backlog.processing)


def wait_for_drain(
    reader: FunctionCaller,
    timeout: float,
    *,
    interval: float = 1.0,
    on_tick: Callable[[InFlight], None] = lambda _f: None,
) -> InFlight:
    """Wait until no job is queued or processing (or `timeout` passes); returns the last count.

    While paused, jobs whose RQ copy was lost (Redis flushed) stay queued until their lease
    expires and the poller's reaper returns them to pending; the wait covers that too.
    """
    deadline = time.monotonic() + timeout
    while True:
        current = in_flight(reader)
        on_tick(current)
        if current.total == 0 or time.monotonic() >= deadline:
            return current
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


@dataclass(frozen=True)
class CancelOutcome:
    job_id: str
    cancelled: bool
    status: str | None  # the job's status when it could not be cancelled; None: no such job

    def describe(self) -> str:
        if self.cancelled:
            return f"{self.job_id}: cancelled"
        if self.status is None:
            return f"{self.job_id}: no such job"
        return (
            f"{self.job_id}: not cancelled, it is {self.status} "
            "(only pending or queued jobs can be cancelled)"
        )


def cancel_jobs(store: JobStore, job_ids: list[str]) -> list[CancelOutcome]:
    cancelled = [job_id for job_id in job_ids if store.cancel(job_id)]
    refused = [job_id for job_id in job_ids if job_id not in cancelled]
    statuses = store.job_statuses(refused) if refused else {}
    return [
        CancelOutcome(job_id, True, "cancelled")
        if job_id in cancelled
        else CancelOutcome(job_id, False, statuses.get(job_id))
        for job_id in job_ids
    ]


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`24h`, `30m`, `7d`, `2w`, `90s` ago, or an ISO 8601 time (UTC when it has no offset)."""
    match = _DURATION.match(text)
    if match:
        amount, unit = float(match.group(1)), match.group(2).lower()
        return (now or datetime.now(UTC)) - timedelta(seconds=amount * _UNITS[unit])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"expected a duration like 24h, 30m, 7d or an ISO time like 2026-11-24T09:00, "
            f"got {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def reason_pattern(text: str) -> str:
    """A substring to match anywhere (case-insensitive), or an ILIKE pattern if it has `%`."""
    return text if "%" in text else f"%{text}%"


def valid_job_id(text: str) -> str:
    """The canonical form of a job id; ValueError when it is not a UUID."""
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        raise ValueError(f"{text!r} is not a job id (a UUID)") from None
