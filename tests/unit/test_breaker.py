"""The breaker's rules, on fakeredis (pure logic; the shared-state test is in integration)."""

from __future__ import annotations

import time

import fakeredis
import pytest

from notifier.errors import PermanentDeliveryError, TransientDeliveryError
from notifier.pipeline.breaker import CircuitOpenError, ProviderBreaker


def make(redis: fakeredis.FakeRedis, name: str = "sendgrid", reset: int = 60) -> ProviderBreaker:
    return ProviderBreaker(name, redis, fail_max=2, reset_timeout=reset)


def transient() -> None:
    raise TransientDeliveryError("503")


def permanent() -> None:
    raise PermanentDeliveryError("400")


def test_transient_failures_open_it_and_then_no_call_is_made() -> None:
    redis = fakeredis.FakeRedis()
    breaker = make(redis)
    for _ in range(2):
        with pytest.raises(TransientDeliveryError):
            breaker.guard(transient)
    assert breaker.state == "open"
    calls = []
    with pytest.raises(CircuitOpenError) as opened:
        breaker.guard(lambda: calls.append(1))
    assert calls == [] and opened.value.retry_at > breaker.opened_at  # type: ignore[operator]


def test_permanent_errors_neither_trip_nor_reset() -> None:
    breaker = make(fakeredis.FakeRedis())
    with pytest.raises(TransientDeliveryError):
        breaker.guard(transient)
    for _ in range(5):
        with pytest.raises(PermanentDeliveryError):
            breaker.guard(permanent)
    assert breaker.state == "closed" and breaker.fail_counter == 1


def test_success_resets_the_count() -> None:
    breaker = make(fakeredis.FakeRedis())
    with pytest.raises(TransientDeliveryError):
        breaker.guard(transient)
    assert breaker.guard(lambda: "ok") == "ok"
    assert breaker.fail_counter == 0


def test_state_is_shared_between_instances_and_separate_per_provider() -> None:
    redis = fakeredis.FakeRedis()
    first, second, other = make(redis), make(redis), make(redis, "twilio")
    for _ in range(2):
        with pytest.raises(TransientDeliveryError):
            first.guard(transient)
    assert second.state == "open"
    assert other.state == "closed"


def test_trial_call_after_reset_timeout_closes_it() -> None:
    breaker = make(fakeredis.FakeRedis(), reset=1)
    for _ in range(2):
        with pytest.raises(TransientDeliveryError):
            breaker.guard(transient)
    time.sleep(2.1)  # opened_at is whole seconds
    assert breaker.guard(lambda: "ok") == "ok"
    assert breaker.state == "closed"


def test_after_the_reset_timeout_only_one_trial_request_goes_out() -> None:
    redis = fakeredis.FakeRedis()
    first, second = make(redis, reset=1), make(redis, reset=1)
    for _ in range(2):
        with pytest.raises(TransientDeliveryError):
            first.guard(transient)
    time.sleep(2.1)

    def trial_in_flight() -> str:
        # While this trial is out, another worker's send is refused, without a request.
        with pytest.raises(CircuitOpenError):
            second.guard(lambda: pytest.fail("a second request went out during the trial"))
        return "ok"

    assert first.guard(trial_in_flight) == "ok"
    assert first.state == "closed"
    assert second.guard(lambda: "after") == "after"


def test_a_failed_trial_opens_it_again() -> None:
    breaker = make(fakeredis.FakeRedis(), reset=1)
    for _ in range(2):
        with pytest.raises(TransientDeliveryError):
            breaker.guard(transient)
    time.sleep(2.1)
    with pytest.raises(TransientDeliveryError):
        breaker.guard(transient)
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        breaker.guard(lambda: "refused")
