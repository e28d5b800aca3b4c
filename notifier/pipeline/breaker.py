"""One circuit breaker per provider, its state shared by every worker through Redis.

pybreaker keeps the state (closed / open / half-open, failure count, opened-at) in Redis under
its own namespace per provider. We do not run the provider call inside `CircuitBreaker.call()`:
that holds a per-process lock for the whole call (serializing concurrent sends), and it counts
an excluded exception as a success. Instead the send runs outside, and its outcome is reported
through `call()` afterwards: a transient error as a failure, a success as a success, and a
permanent error not at all, so it neither trips nor resets the breaker.
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
# How long callers wait while another process's trial request is in flight.
TRIAL_BUSY_WAIT = timedelta(seconds=2)
logger = logging.getLogger("notifier.pipeline.breaker")


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
    ) -> None:
        namespace = f"notifier:breaker:{provider}"
        storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, redis, namespace=namespace)
        self.provider = provider
        self._redis = redis
        self._trial_key = f"{namespace}:trial"
        self._trial_seconds = trial_seconds
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            state_storage=storage,
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
        opened: datetime | None = self._breaker._state_storage.opened_at
        return opened

    def retry_at(self) -> datetime | None:
        """When an open breaker lets a trial request through (opened_at is whole seconds)."""
        opened = self.opened_at
        if opened is None:
            return None
        return opened + timedelta(seconds=self._breaker.reset_timeout + 1)

    def guard(self, send: Callable[[], T]) -> T:
        """Run `send` unless the breaker refuses; record its outcome.

        While open, every caller is refused until the reset timeout. After it, exactly one
        request in the whole cluster is the trial (a Redis key taken with NX); everyone else is
        refused a little longer, so an outage's backlog does not stampede a recovering provider
        and burn attempts. Refusals carry a jittered retry time, so deferred jobs spread out.
        """
        trial = False
        if self.state != pybreaker.STATE_CLOSED:
            now = datetime.now(UTC)
            retry_at = self.retry_at()
            if self.state == pybreaker.STATE_OPEN and retry_at is not None and now < retry_at:
                raise CircuitOpenError(self.provider, self._jittered(retry_at))
            if not self._take_trial():
                raise CircuitOpenError(self.provider, self._jittered(now + TRIAL_BUSY_WAIT))
            trial = True
        try:
            result = send()
        except TransientDeliveryError as error:
            self._report(_reraise, error)
            raise
        else:
            self._report(_succeed)
        finally:
            if trial:
                self._release_trial()
        return result

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
