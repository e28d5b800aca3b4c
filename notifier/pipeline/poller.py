"""`notifier poller`: claim due jobs in batches and hand them to RQ; run the reaper.

Three small duties, each on its own interval: claim (woken at once by LISTEN/NOTIFY when a job
becomes due, else every NOTIFIER_POLL_INTERVAL; over the Supabase REST API, where LISTEN does
not pass, every NOTIFIER_POLL_INTERVAL only), reap expired leases (NOTIFIER_REAPER_INTERVAL),
and back-pressure: claim nothing while NOTIFIER_MAX_IN_FLIGHT notifications, or
NOTIFIER_MAX_QUEUED_RQ_JOBS RQ jobs, wait in Redis.

The second bound keeps latency low under a steady trickle: each wake-up claims what is due, so
a busy pipeline would otherwise fill Redis with many RQ jobs of one or two notifications each,
and every RQ job costs a worker several milliseconds however small it is (that queue was most
of the 0.8 s median latency measured at a steady 100/s). Held back, due jobs wait in Postgres
and the next claim takes them together, up to full RQ jobs; an idle pipeline still claims each
job the moment it is due. While held back the poller looks again every `BACKPRESSURE_RECHECK`,
and a claim that got all it asked for is followed by another at once: a backlog that is
already due sends no NOTIFY, so it drains as fast as the workers take RQ jobs.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from dataclasses import dataclass
from types import FrameType

import psycopg
from psycopg.conninfo import make_conninfo
from redis import Redis
from redis.exceptions import RedisError

from notifier.errors import StoreUnavailableError
from notifier.log import event
from notifier.pipeline.queues import enqueue_claims, queued_rq_jobs
from notifier.store import JobStore

logger = logging.getLogger("notifier.pipeline.poller")
WAKE_CHANNEL = "notifier_jobs_due"
RECONNECT_MIN_SECONDS = 1.0
BACKPRESSURE_RECHECK = 0.02  # seconds between looks at the queues while they are full
RECONNECT_MAX_SECONDS = 30.0
# TCP keepalives on the LISTEN connection, so a silently dropped one is noticed in ~a minute.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


@dataclass(frozen=True)
class PollerPolicy:
    poll_interval: float
    reaper_interval: float
    claim_batch_size: int
    rq_job_size: int
    max_in_flight: int
    lease_seconds: int
    unknown_outcome: str
    rq_job_timeout: int
    max_queued_rq_jobs: int = 8


def stop_on_signals(stopping: threading.Event) -> threading.Event:
    """Make SIGTERM and SIGINT set `stopping` instead of killing the process.

    Installed before anything slow (settings, connections), so a process manager's SIGTERM
    during start-up ends the poller gracefully (exit 0) instead of with 143.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        event(logger, "poller_stopping", signal=signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stopping


class Poller:
    """Moves due jobs from Postgres to RQ. Any number may run at once (SKIP LOCKED claims)."""

    def __init__(
        self,
        store: JobStore,
        redis: Redis,
        database_url: str | None,
        policy: PollerPolicy,
        *,
        stopping: threading.Event | None = None,
    ) -> None:
        self._store = store
        self._redis = redis
        self._database_url = database_url
        self._policy = policy
        # Shared with `stop_on_signals`, so a SIGTERM during start-up is a graceful stop too.
        self._stopping = stopping if stopping is not None else threading.Event()
        self._name = f"{socket.gethostname()}:{id(self):x}"
        self._next_reap = 0.0
        self._held_back = False
        self._claimed_all_asked = False  # the last claim filled what it asked for

    def close(self) -> None:
        """Release the store's connections (after `run` has returned)."""
        self._store.close()

    def stop(self, *_: object) -> None:
        """Finish the current claim-and-enqueue, then return (SIGTERM, SIGINT)."""
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        stop_on_signals(self._stopping)

    def run(self, *, burst: bool = False) -> int:
        """Poll until stopped (`burst`: until nothing is due); returns how many were enqueued.

        A lost database connection (or a REST API answering 503) does not end the poller: it
        backs off, reconnects (LISTEN included) and goes on; in burst mode the error ends the
        run instead. Without a `database_url` (the REST backend) it polls without LISTEN.
        """
        total = 0
        backoff = RECONNECT_MIN_SECONDS
        while not self._stopping.is_set():
            try:
                if self._database_url is None:
                    event(logger, "poller_started", name=self._name, burst=burst, wake="poll")
                    backoff = RECONNECT_MIN_SECONDS
                    total += self._loop(None, burst=burst)
                    break
                with psycopg.connect(
                    make_conninfo(self._database_url, **KEEPALIVES), autocommit=True
                ) as conn:
                    conn.execute(f"listen {WAKE_CHANNEL}")
                    event(logger, "poller_started", name=self._name, burst=burst)
                    backoff = RECONNECT_MIN_SECONDS
                    total += self._loop(conn, burst=burst)
                    break
            except (psycopg.OperationalError, StoreUnavailableError) as error:
                if burst:
                    raise
                event(
                    logger,
                    "database_unavailable",
                    logging.ERROR,
                    error=type(error).__name__,
                    retry_in_s=backoff,
                )
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)
        event(logger, "poller_stopped", name=self._name, enqueued=total)
        return total

    def _loop(
        self, listen_conn: psycopg.Connection[tuple[object, ...]] | None, *, burst: bool
    ) -> int:
        total = 0
        while not self._stopping.is_set():
            self.reap_if_due()
            claimed = self.claim_once(burst=burst)
            total += claimed
            if self._claimed_all_asked:
                # More may be due: claim again without waiting. Also when the claim was cut
                # short by the room in Redis rather than by NOTIFIER_CLAIM_BATCH: a backlog
                # that is already due sends no NOTIFY, so waiting here would cap a draining
                # backlog at one refill per NOTIFIER_POLL_INTERVAL.
                continue
            if burst and claimed == 0:
                break
            if self._held_back:
                self._stopping.wait(BACKPRESSURE_RECHECK)
                continue
            self._wait(listen_conn)
        return total

    def reap_if_due(self, *, force: bool = False) -> dict[str, int]:
        now = time.monotonic()
        if not force and now < self._next_reap:
            return {}
        self._next_reap = now + self._policy.reaper_interval
        released = self._store.release_expired(self._policy.unknown_outcome)
        if any(released.values()):
            event(logger, "leases_released", logging.WARNING, **released)
        return released

    def claim_once(self, *, burst: bool = False) -> int:
        """Claim one batch and enqueue it; returns how many notifications were enqueued.

        `burst` (no workers may be running yet) lifts the RQ-job bound, not NOTIFIER_MAX_IN_FLIGHT.
        """
        room = self._room_in_redis(burst=burst)
        self._held_back = room <= 0 and not burst
        self._claimed_all_asked = False
        if room <= 0:
            return 0
        asked = min(room, self._policy.claim_batch_size)
        claims = self._store.claim(asked, self._policy.lease_seconds, self._name)
        if not claims:
            return 0
        try:
            enqueue_claims(
                self._redis, claims, self._policy.rq_job_size, self._policy.rq_job_timeout
            )
        except RedisError as error:
            released = self._store.release_claims(claims)
            event(
                logger,
                "enqueue_failed",
                logging.ERROR,
                claimed=len(claims),
                released=released,
                error=type(error).__name__,
            )
            return 0
        event(logger, "jobs_enqueued", count=len(claims))
        self._claimed_all_asked = len(claims) >= asked
        return len(claims)

    def _room_in_redis(self, *, burst: bool = False) -> int:
        """Notifications to claim now: within NOTIFIER_MAX_IN_FLIGHT (each waiting RQ job
        counted as full), and only in RQ jobs the NOTIFIER_MAX_QUEUED_RQ_JOBS bound leaves."""
        try:
            rq_jobs = queued_rq_jobs(self._redis)
        except RedisError as error:
            event(logger, "redis_unavailable", logging.ERROR, error=type(error).__name__)
            return 0
        size = self._policy.rq_job_size
        room = self._policy.max_in_flight - rq_jobs * size
        if not burst:
            room = min(room, (self._policy.max_queued_rq_jobs - rq_jobs) * size)
        return room

    def _wait(self, listen_conn: psycopg.Connection[tuple[object, ...]] | None) -> None:
        """Sleep until a job becomes due (NOTIFY), the poll interval passes, or a stop."""
        if listen_conn is None:
            self._stopping.wait(self._policy.poll_interval)
            return
        deadline = time.monotonic() + self._policy.poll_interval
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # Short slices so a stop is noticed within half a second.
            woken = any(
                True for _ in listen_conn.notifies(timeout=min(remaining, 0.5), stop_after=1)
            )
            if woken:
                # One claim serves every job that became due meanwhile: drain the rest. (Not
                # inside the loop above: a second notifies() there waits on the first's lock.)
                for _ in listen_conn.notifies(timeout=0.01):
                    pass
                return
