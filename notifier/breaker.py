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
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

import pybreaker
from redis import Redis

from notifier.errors import NotifierError, TransientDeliveryError
from notifier.log import event

T = TypeVar("T")
logger = logging.getLogger("notifier.breaker")


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

    def __init__(self, provider: str, redis: Redis, *, fail_max: int, reset_timeout: int) -> None:
        storage = pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, redis, namespace=f"notifier:breaker:{provider}"
        )
        self.provider = provider
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
        if self.state == pybreaker.STATE_OPEN:
            retry_at = self.retry_at()
            if retry_at is not None and datetime.now(UTC) < retry_at:
                raise CircuitOpenError(self.provider, retry_at)
        try:
            result = send()
        except TransientDeliveryError as error:
            self._report(_reraise, error)
            raise
        self._report(_succeed)
        return result

    def _report(self, outcome: Callable[..., Any], *args: Any) -> None:
        # The outcome is recorded either way; the caller handles the original error.
        with contextlib.suppress(pybreaker.CircuitBreakerError, TransientDeliveryError):
            self._breaker.call(outcome, *args)
