"""The success recorder: group commits without waiting to fill a batch, every waiting send told
its own answer, and a database that keeps failing reported to every send it holds."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from notifier.pipeline import recorder
from notifier.pipeline.recorder import SuccessRecorder
from notifier.store.jobs import AcceptedSend, JobContext, JobStore


def send(job_id: str) -> AcceptedSend:
    job = JobContext(
        job_id=job_id, lease_token="t-" + job_id, recipient_id="r", group_id=None,
        notification_type="immediate", urgency_level="normal", delivery_method="email",
        content={}, metadata={}, retry_count=0, max_retries=3, scheduled_for=None,
        recipient={}, group_name=None, preferences=None,
    )  # fmt: skip
    return AcceptedSend(job, "sendgrid", "m-" + job_id, None, 5)


class GatedStore(JobStore):
    """Records what each call held; the first call waits at a gate, so others pile up."""

    def __init__(self, stale: set[str] | None = None, missing: set[str] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.first_call_entered = threading.Event()
        self.gate = threading.Event()
        self.stale = stale or set()
        self.missing = missing or set()

    def complete_many(self, sends: Sequence[AcceptedSend]) -> dict[str, bool]:
        self.calls.append([s.job.job_id for s in sends])
        if len(self.calls) == 1:
            self.first_call_entered.set()
            assert self.gate.wait(10)
        return {
            s.job.job_id: s.job.job_id not in self.stale
            for s in sends
            if s.job.job_id not in self.missing
        }


def test_successes_that_finish_during_a_write_go_together_in_the_next_one() -> None:
    store = GatedStore(stale={"c"}, missing={"d"})
    rec = SuccessRecorder(store)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(rec.record, send("a"))
        assert store.first_call_entered.wait(10)
        later = {job: pool.submit(rec.record, send(job)) for job in ("b", "c", "d")}
        while rec._queue.qsize() < 3:  # all three wait behind the write in flight
            threading.Event().wait(0.005)
        store.gate.set()
        assert first.result(10) is True
        answers = {job: future.result(10) for job, future in later.items()}
    rec.close()
    assert [sorted(call) for call in store.calls] == [["a"], ["b", "c", "d"]]
    assert answers == {"b": True, "c": False, "d": False}  # stale lease; job no longer there


def test_a_lone_success_is_written_at_once() -> None:
    store = GatedStore()
    store.gate.set()
    rec = SuccessRecorder(store)
    assert rec.record(send("a")) is True
    assert rec.record(send("b")) is True
    rec.close()
    assert store.calls == [["a"], ["b"]]


class FailingStore(JobStore):
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def complete_many(self, sends: Sequence[AcceptedSend]) -> dict[str, bool]:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("database went away")
        return {s.job.job_id: True for s in sends}


def test_a_failing_database_is_retried_after_each_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder, "RECORD_RETRY_PAUSES", (0.0, 0.0, 0.0))
    store = FailingStore(failures=3)
    rec = SuccessRecorder(store)
    assert rec.record(send("a")) is True
    rec.close()
    assert store.calls == 4


def test_when_recording_never_succeeds_every_waiting_send_gets_the_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(recorder, "RECORD_RETRY_PAUSES", (0.0,))
    failing = FailingStore(failures=100)
    rec = SuccessRecorder(failing)
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(rec.record, send(job)) for job in ("a", "b", "c")]
        for future in futures:
            with pytest.raises(ConnectionError):
                future.result(10)
    rec.close()
    assert failing.calls >= len(recorder.RECORD_RETRY_PAUSES) + 1, "retried before giving up"


def test_close_writes_what_is_queued_and_stops_the_thread() -> None:
    store = GatedStore()
    rec = SuccessRecorder(store)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(rec.record, send("a"))
        assert store.first_call_entered.wait(10)
        second = pool.submit(rec.record, send("b"))
        while rec._queue.qsize() < 1:
            threading.Event().wait(0.005)
        thread = rec._thread
        assert thread is not None and thread.is_alive()
        closing = pool.submit(rec.close)
        store.gate.set()
        closing.result(10)
        assert first.result(10) and second.result(10)
    assert store.calls == [["a"], ["b"]]
    assert not thread.is_alive()


class RefusesOne(JobStore):
    """A database that refuses any write containing job "bad"; the first write waits at a gate."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.first_call_entered = threading.Event()
        self.gate = threading.Event()

    def complete_many(self, sends: Sequence[AcceptedSend]) -> dict[str, bool]:
        ids = [s.job.job_id for s in sends]
        self.calls.append(ids)
        if len(self.calls) == 1:
            self.first_call_entered.set()
            assert self.gate.wait(10)
        if "bad" in ids:
            raise ValueError("invalid byte sequence")
        return dict.fromkeys(ids, True)


def test_a_send_the_database_refuses_does_not_sink_the_rest_of_its_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(recorder, "RECORD_RETRY_PAUSES", (0.0,))
    store = RefusesOne()
    rec = SuccessRecorder(store)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(rec.record, send("a"))
        assert store.first_call_entered.wait(10)
        later = {job: pool.submit(rec.record, send(job)) for job in ("b", "bad", "c")}
        while rec._queue.qsize() < 3:
            threading.Event().wait(0.005)
        store.gate.set()
        assert first.result(10) is True
        assert later["b"].result(10) is True and later["c"].result(10) is True
        with pytest.raises(ValueError):
            later["bad"].result(10)
    rec.close()
    together = [sorted(call) for call in store.calls[1:3]]
    assert together == [["b", "bad", "c"], ["b", "bad", "c"]]  # tried, then retried
    assert sorted(store.calls[3:]) == [["b"], ["bad"], ["c"]]  # then each alone
