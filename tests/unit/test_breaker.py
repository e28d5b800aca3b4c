"""The breaker's rules, on fakeredis (pure logic; the shared-state test is in integration).

Time is a `Clock` the tests move: pybreaker's `opened_at` is stamped from it, so no test sleeps.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import fakeredis
import pytest

from notifier.errors import PermanentDeliveryError, TransientDeliveryError
from notifier.pipeline.breaker import (
    STORAGE_FIELDS,
    CircuitOpenError,
    ProviderBreaker,
    retry_at,
    storage_key,
    trial_key,
)


class Clock:
    """Whole seconds, like pybreaker's stored `opened_at`, starting at a fixed moment."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(
    redis: fakeredis.FakeRedis, clock: Clock, name: str = "sendgrid", reset: int = 60
) -> ProviderBreaker:
    return ProviderBreaker(name, redis, fail_max=2, reset_timeout=reset, clock=clock)


def transient() -> None:
    raise TransientDeliveryError("503")


def permanent() -> None:
    raise PermanentDeliveryError("400")


def test_transient_failures_open_it_and_then_no_call_is_made(clock: Clock) -> None:
    redis = fakeredis.FakeRedis()
    breaker = make(redis, clock)
    for _ in range(2):
        with pytest.raises(TransientDeliveryError):
            breaker.guard(transient)
    assert breaker.state == "open"
    calls = []
    with pytest.raises(CircuitOpenError) as opened:
        breaker.guard(lambda: calls.append(1))
    assert calls == [] and breaker.opened_at == clock.now
    assert opened.value.retry_at >= clock.now + timedelta(seconds=61)


def test_permanent_errors_neither_trip_nor_reset(clock: Clock) -> None:
    breaker = make(fakeredis.FakeRedis(), clock)
    with pytest.raises(TransientDeliveryError):
        breaker.guard(transient)
    for _ in range(5):
        with pytest.raises(PermanentDeliveryError):
            breaker.guard(permanent)
    assert breaker.state == "closed" and breaker.fail_counter == 1


def test_success_resets_the_count(clock: Clock) -> None:
    breaker = make(fakeredis.FakeRedis(), clock)
    with pytest.raises(TransientDeliveryError):
        breaker.guard(transient)
    assert breaker.guard(lambda: "ok") == "ok"
    assert breaker.fail_counter == 0


def test_state_is_shared_between_instances_and_separate_per_provider(clock: Clock) -> None:
    redis = fakeredis.FakeRedis()
    first, second, other = make(redis, clock), make(redis, clock), make(redis, clock, "twilio")
    for _ in range(2):
        with pytest.raises(TransientDeliveryError):
            first.guard(transient)
    assert second.state == "open"
    assert other.state == "closed"


def test_refused_until_the_reset_timeout_plus_a_second_then_a_trial_closes_it(
    clock: Clock,
) -> None:
    breaker = make(fakeredis.FakeRedis(), clock, reset=1)
    for _ in range(2):
        with pytest.raises(TransientDeliveryError):
            breaker.guard(transient)
    clock.advance(1.9)  # opened_at is whole seconds, so one more second than the timeout
    with pytest.raises(CircuitOpenError):
        breaker.guard(lambda: pytest.fail("sent before the reset timeout"))
    clock.advance(0.1)
    assert breaker.guard(lambda: "ok") == "ok"
    assert breaker.state == "closed"


def test_after_the_reset_timeout_only_one_trial_request_goes_out(clock: Clock) -> None:
    redis = fakeredis.FakeRedis()
    first, second = make(redis, clock, reset=1), make(redis, clock, reset=1)
    for _ in range(2):
        with pytest.raises(TransientDeliveryError):
            first.guard(transient)
    clock.advance(2)

    def trial_in_flight() -> str:
        # While this trial is out, another worker's send is refused, without a request.
        with pytest.raises(CircuitOpenError):
            second.guard(lambda: pytest.fail("a second request went out during the trial"))
        return "ok"

    assert first.guard(trial_in_flight) == "ok"
    assert first.state == "closed"
    assert second.guard(lambda: "after") == "after"


def test_a_failed_trial_opens_it_again_for_a_full_timeout(clock: Clock) -> None:
    breaker = make(fakeredis.FakeRedis(), clock, reset=1)
    for _ in range(2):
        with pytest.raises(TransientDeliveryError):
            breaker.guard(transient)
    clock.advance(2)
    with pytest.raises(TransientDeliveryError):
        breaker.guard(transient)
    assert breaker.state == "open" and breaker.opened_at == clock.now
    with pytest.raises(CircuitOpenError):
        breaker.guard(lambda: "refused")
    clock.advance(2)
    assert breaker.guard(lambda: "ok") == "ok" and breaker.state == "closed"


def test_the_key_layout_is_the_one_pybreaker_writes(clock: Clock) -> None:
    redis = fakeredis.FakeRedis()
    breaker = make(redis, clock, name="twilio")
    for _ in range(2):
        with pytest.raises(TransientDeliveryError):
            breaker.guard(transient)

    values = redis.mget([storage_key("twilio", field) for field in STORAGE_FIELDS])

    assert values == [b"open", b"2", str(int(clock.now.timestamp())).encode()]
    written = {key.decode() for key in redis.keys("*")}
    assert written >= {storage_key("twilio", field) for field in STORAGE_FIELDS}
    assert all(key.startswith("notifier:breaker:twilio:pybreaker:") for key in written)
    assert trial_key("twilio") == "notifier:breaker:twilio:trial"


def test_retry_at_is_one_second_past_the_reset_timeout() -> None:
    opened = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

    assert retry_at(opened, 60) == opened + timedelta(seconds=61)


class CountingRedis(fakeredis.FakeRedis):
    """Counts the commands a breaker sends, to hold the hot path to its budget."""

    commands = 0

    def execute_command(self, *args, **options):  # type: ignore[no-untyped-def]
        CountingRedis.commands += 1
        return super().execute_command(*args, **options)


def test_successes_on_a_clean_closed_breaker_cost_one_read_per_cache_period(clock: Clock) -> None:
    redis = CountingRedis()
    breaker = ProviderBreaker("sendgrid", redis, fail_max=2, reset_timeout=60, clock=clock,
                              cache_seconds=1.0)
    CountingRedis.commands = 0
    for _ in range(50):
        breaker.guard(lambda: None)
    assert CountingRedis.commands == 1  # one MGET, no writes

    clock.advance(1)
    breaker.guard(lambda: None)
    assert CountingRedis.commands == 2


def test_another_workers_open_is_seen_within_the_cache_period(clock: Clock) -> None:
    redis = fakeredis.FakeRedis()
    ours = ProviderBreaker("sendgrid", redis, fail_max=2, reset_timeout=60, clock=clock,
                           cache_seconds=1.0)
    theirs = make(redis, clock)
    ours.guard(lambda: None)
    for _ in range(2):
        with pytest.raises(TransientDeliveryError):
            theirs.guard(transient)
    assert theirs.state == "open"

    ours.guard(lambda: None)  # still inside our cache period: allowed (the stated bound)
    clock.advance(1)
    with pytest.raises(CircuitOpenError):
        ours.guard(lambda: None)


def test_a_success_after_failures_still_resets_the_count_with_a_cache(clock: Clock) -> None:
    redis = fakeredis.FakeRedis()
    breaker = ProviderBreaker("sendgrid", redis, fail_max=2, reset_timeout=60, clock=clock,
                              cache_seconds=1.0)
    with pytest.raises(TransientDeliveryError):
        breaker.guard(transient)
    breaker.guard(lambda: None)
    with pytest.raises(TransientDeliveryError):
        breaker.guard(transient)
    assert breaker.state == "closed" and breaker.fail_counter == 1
