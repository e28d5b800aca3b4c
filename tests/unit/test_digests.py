"""The scheduler loop (notifier/digests/scheduler.py) with a fake store: cadence, burst, stop, failures.

The pass itself is SQL and is tested against PostgreSQL in tests/integration/test_digests.py.
"""

from __future__ import annotations

import threading
from typing import Any, cast

import pytest

from notifier.digests.scheduler import DigestScheduler
from notifier.store import JobStore


class FakeStore:
    """Counts passes; `results` are returned (or raised) in turn, then 0."""

    def __init__(
        self, *results: int | Exception, on_call: Any = None, parked: list[int] | None = None
    ) -> None:
        self.results = list(results)
        self.calls = 0
        self.on_call = on_call
        self.parked = parked or []

    def parked_digest_schedules(self) -> int:
        return self.parked.pop(0) if self.parked else 0

    def create_digest_jobs(self) -> int:
        self.calls += 1
        if self.on_call is not None:
            self.on_call(self.calls)
        result = self.results.pop(0) if self.results else 0
        if isinstance(result, Exception):
            raise result
        return result


def scheduler(store: FakeStore, interval: float = 60.0) -> DigestScheduler:
    return DigestScheduler(cast(JobStore, store), interval)


def test_burst_runs_exactly_one_pass_and_returns_its_count() -> None:
    store = FakeStore(3, 5)
    assert scheduler(store).run(burst=True) == 3
    assert store.calls == 1


def test_burst_raises_when_the_pass_fails_so_the_exit_code_tells() -> None:
    store = FakeStore(RuntimeError("database is down"))
    with pytest.raises(RuntimeError, match="database is down"):
        scheduler(store).run(burst=True)


def test_loop_survives_a_failed_pass_and_adds_up_later_ones() -> None:
    runner: DigestScheduler

    def stop_after_third(calls: int) -> None:
        if calls == 3:
            runner.stop()

    store = FakeStore(2, RuntimeError("connection lost"), 4, on_call=stop_after_third)
    runner = scheduler(store, interval=0.001)
    assert runner.run() == 6
    assert store.calls == 3


def test_stop_during_the_wait_ends_the_loop_without_waiting_out_the_interval() -> None:
    store = FakeStore(1)
    runner = scheduler(store, interval=3600)
    thread = threading.Thread(target=runner.run)
    thread.start()
    while store.calls == 0:
        threading.Event().wait(0.01)
    runner.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert store.calls == 1


def test_passes_start_one_interval_apart_whatever_a_pass_takes() -> None:
    """A pass taking 0.4 s on a 1 s cadence waits 0.6 s, not 1 s."""
    now = [0.0]
    waits: list[float] = []
    store = FakeStore()
    runner = DigestScheduler(cast(JobStore, store), 1.0, clock=lambda: now[0])

    def slow_pass() -> int:
        now[0] += 0.4
        return 0

    def record_wait(timeout: float | None = None) -> bool:
        assert timeout is not None
        waits.append(timeout)
        now[0] += timeout
        if len(waits) == 2:
            runner.stop()
        return False

    store.create_digest_jobs = slow_pass  # type: ignore[method-assign]
    runner._stopping.wait = record_wait  # type: ignore[method-assign]
    runner.run()
    assert waits == pytest.approx([0.6, 0.6])


def test_parked_schedules_are_logged_when_their_number_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore(parked=[0, 2, 2, 1, 0, 0])
    runner = scheduler(store)
    with caplog.at_level("INFO", logger="notifier.digests.scheduler"):
        for _ in range(6):
            runner.run_once()
    logged = [
        (r.levelname, r.notifier_fields["count"])  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "digest_schedules_parked"
    ]
    assert logged == [("WARNING", 2), ("WARNING", 1), ("INFO", 0)]
