"""One circuit breaker per provider, its state shared by every worker through Redis.

pybreaker keeps the state (closed / open / half-open, failure count, opened-at) in Redis under
its own namespace per provider. We do not run the provider call inside `CircuitBreaker.call()`:
that holds a per-process lock for the whole call (serializing concurrent sends), and it counts
an excluded exception as a success. Instead the send runs outside, and its outcome is reported
through `call()` afterwards: a transient error as a failure, a success as a success, and a
permanent error not at all, so it neither trips nor resets the breaker.

On the hot path (a closed breaker with no failures counted) a success costs no Redis command:
the state is read at most once per `STATE_CACHE_SECONDS` per process (one MGET), and a success
is reported only when it changes something (a failure count to reset, a trial to close).
Failures and state changes are always written at once. The agreement bound: a worker sees a
breaker another worker opened (or closed) at most `STATE_CACHE_SECONDS` later, so it may send
up to that long to a provider the cluster has given up on (those calls are ordinary attempts);
and a success whose cached view was closed-and-clean does not reset a failure count another
worker raised within that window, so failures spread over workers may trip the breaker a little
sooner than strictly consecutive ones would.

This module owns the Redis key layout (`storage_key`) and the reopening rule (`retry_at`), so
the read side (`notifier.operations.redis_state`) imports them instead of re-deriving them.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

import pybreaker
from redis import Redis
from redis.exceptions import RedisError

from notifier.errors import NotifierError, TransientDeliveryError
from notifier.log import event

T = TypeVar("T")
Clock = Callable[[], datetime]
# How long callers wait while another process's trial request is in flight.
TRIAL_BUSY_WAIT = timedelta(seconds=2)
# How long a worker trusts its last read of the shared state (see the module docstring).
STATE_CACHE_SECONDS = 1.0
NAMESPACE_PREFIX = "notifier:breaker"
# What pybreaker's CircuitRedisStorage keeps per breaker (each under `storage_key`).
STORAGE_FIELDS = ("state", "fail_counter", "opened_at")
logger = logging.getLogger("notifier.pipeline.breaker")


def namespace(provider: str) -> str:
    """Each provider's own namespace: without one, every breaker would share the same keys."""
    return f"{NAMESPACE_PREFIX}:{provider}"


def storage_key(provider: str, field: str) -> str:
    """The Redis key pybreaker's storage uses for `field` (see `STORAGE_FIELDS`)."""
    return f"{namespace(provider)}:{pybreaker.CircuitRedisStorage.BASE_NAMESPACE}:{field}"


def trial_key(provider: str) -> str:
    """The key whose holder makes the one trial request after the reset timeout."""
    return f"{namespace(provider)}:trial"


def retry_at(opened_at: datetime, reset_timeout: float) -> datetime:
    """When an open breaker lets a trial through: pybreaker stores `opened_at` in whole
    seconds (rounded down), so one more second keeps the trial after the real reset timeout."""
    return opened_at + timedelta(seconds=reset_timeout + 1)


def opened_at_from_storage(raw: bytes | str | int) -> datetime:
    """`opened_at` as pybreaker stores it (epoch seconds) as an aware datetime."""
    return datetime.fromtimestamp(int(raw), UTC)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class CircuitOpenError(NotifierError):
    """The provider's breaker is open: no request was made. Retry at `retry_at`."""

    def __init__(self, provider: str, retry_at: datetime) -> None:
        super().__init__(f"{provider} circuit breaker is open until {retry_at.isoformat()}")
        self.provider = provider
        self.retry_at = retry_at


class _LogStateChanges(pybreaker.CircuitBreakerListener):
    def state_change(self, cb: pybreaker.CircuitBreaker, old: Any, new: Any) -> None:
        event(
            logger,
            "breaker_state_change",
            logging.WARNING,
            provider=cb.name,
            old_state=getattr(old, "name", None),
            new_state=getattr(new, "name", None),
            fail_counter=cb.fail_counter,
        )


class _ClockedStorage(pybreaker.CircuitRedisStorage):
    """pybreaker's Redis storage, with `opened_at` taken from the breaker's clock.

    pybreaker stamps `opened_at` with the wall clock when (and only when) it opens the circuit;
    taking the injected clock instead keeps one notion of "now" for opening and for
    `retry_at`, so tests move time instead of sleeping. With the default clock nothing changes.
    """

    def __init__(self, redis: Redis, namespace: str, clock: Clock) -> None:
        super().__init__(pybreaker.STATE_CLOSED, redis, namespace=namespace)
        self._clock = clock

    @property
    def opened_at(self) -> datetime | None:
        opened: datetime | None = pybreaker.CircuitRedisStorage.opened_at.fget(self)  # type: ignore[attr-defined]
        return opened

    @opened_at.setter
    def opened_at(self, wall_clock: datetime) -> None:
        pybreaker.CircuitRedisStorage.opened_at.fset(self, self._clock())  # type: ignore[attr-defined]


def _succeed() -> None:
    return None


def _reraise(error: BaseException) -> NoReturn:
    raise error


class ProviderBreaker:
    """Guards one provider: `guard(send)` refuses while open and records each outcome."""

    def __init__(
        self,
        provider: str,
        redis: Redis,
        *,
        fail_max: int,
        reset_timeout: int,
        trial_seconds: float = 30.0,
        clock: Clock = _utc_now,
        cache_seconds: float = 0.0,
    ) -> None:
        self._storage = _ClockedStorage(redis, namespace(provider), clock)
        self.provider = provider
        self._redis = redis
        self._trial_key = trial_key(provider)
        self._trial_seconds = trial_seconds
        self._clock = clock
        self._cache_for = timedelta(seconds=cache_seconds)
        # (read at, state, fail counter): replaced whole, so threads never see half of one.
        self._cached: tuple[datetime, str, int] | None = None
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            state_storage=self._storage,
            name=provider,
            listeners=[_LogStateChanges()],
        )

    @property
    def state(self) -> str:
        return str(self._breaker.current_state)

    @property
    def fail_counter(self) -> int:
        return int(self._breaker.fail_counter)

    @property
    def opened_at(self) -> datetime | None:
        opened: datetime | None = self._storage.opened_at
        return opened

    def retry_at(self) -> datetime | None:
        """When an open breaker lets a trial request through (see the module's `retry_at`)."""
        opened = self.opened_at
        if opened is None:
            return None
        return retry_at(opened, self._breaker.reset_timeout)

    def guard(self, send: Callable[[], T]) -> T:
        """Run `send` unless the breaker refuses; record its outcome.

        While open, every caller is refused until the reset timeout. After it, exactly one
        request in the whole cluster is the trial (a Redis key taken with NX); everyone else is
        refused a little longer, so an outage's backlog does not stampede a recovering provider
        and burn attempts. Refusals carry a jittered retry time, so deferred jobs spread out.
        """
        trial = False
        state, fail_counter = self._shared_view()
        if state != pybreaker.STATE_CLOSED:
            self._cached = None
            state = self.state  # not the common case: decide on the fresh state
            now = self._clock()
            reopens = self.retry_at()
            if state == pybreaker.STATE_OPEN and reopens is not None and now < reopens:
                raise CircuitOpenError(self.provider, self._jittered(reopens))
            if not self._take_trial():
                raise CircuitOpenError(self.provider, self._jittered(now + TRIAL_BUSY_WAIT))
            trial = True
            if state == pybreaker.STATE_OPEN:
                # Our clock said the timeout is over; pybreaker would ask its own clock again
                # when the outcome is reported, so make the move to half-open here.
                self._breaker.half_open()
        try:
            result = send()
        except TransientDeliveryError as error:
            self._report(_reraise, error)
            self._cached = None
            raise
        else:
            if trial or state != pybreaker.STATE_CLOSED or fail_counter:
                self._report(_succeed)
                self._cached = None
            # else closed with nothing counted: the success would change nothing in Redis
        finally:
            if trial:
                self._release_trial()
        return result

    def _shared_view(self) -> tuple[str, int]:
        """(state, fail counter), read from Redis at most once per cache period."""
        now = self._clock()
        cached = self._cached
        if cached is not None and now - cached[0] < self._cache_for:
            return cached[1], cached[2]
        try:
            raw_state, raw_counter = self._redis.mget(
                storage_key(self.provider, "state"), storage_key(self.provider, "fail_counter")
            )
        except RedisError:
            return pybreaker.STATE_CLOSED, 0  # like pybreaker's storage: behave as closed
        state = raw_state.decode() if isinstance(raw_state, bytes) else pybreaker.STATE_CLOSED
        counter = int(raw_counter or 0)
        self._cached = (now, state, counter)
        return state, counter

    def _jittered(self, moment: datetime) -> datetime:
        spread = max(1.0, self._breaker.reset_timeout * 0.2)
        return moment + timedelta(seconds=random.uniform(0, spread))

    def _take_trial(self) -> bool:
        try:
            return bool(
                self._redis.set(self._trial_key, "1", nx=True, px=int(self._trial_seconds * 1000))
            )
        except RedisError:
            return True  # like pybreaker's storage: without Redis, behave as closed

    def _release_trial(self) -> None:
        with contextlib.suppress(RedisError):
            self._redis.delete(self._trial_key)

    def _report(self, outcome: Callable[..., Any], *args: Any) -> None:
        # The outcome is recorded either way; the caller handles the original error.
        with contextlib.suppress(pybreaker.CircuitBreakerError, TransientDeliveryError):
            self._breaker.call(outcome, *args)
