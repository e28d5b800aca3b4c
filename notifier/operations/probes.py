"""Reading Redis and Postgres against a deadline, for /health, /metrics and `notifier status`.

The caller waits at most its timeout: a probe still blocked then (a server that accepts
connections and never answers) is reported as having given no answer, and its thread ends by
its own socket and statement timeouts. Clients are made for the probe and closed after it, so
a broken connection never outlives one answer.

At most one probe per dependency (what it reads, from where) is in flight at a time, on that
dependency's own one-thread executor: concurrent requests share it, and a request within
NOTIFIER_HEALTH_CACHE_SECONDS of its answer reuses that answer. So a hanging Postgres holds one
thread however many clients poll, and never delays the Redis probe behind a queue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from notifier.config import Settings, plain_secret
from notifier.operations.redis_state import RedisState, probe_client, read_redis_state
from notifier.providers.registry import guarded_by_breaker
from notifier.store.backend import preload, short_caller
from notifier.store.base import FunctionCaller

T = TypeVar("T")
_ERROR_CHARS = 300


@dataclass(frozen=True)
class Probe(Generic[T]):
    """One server's answer: its value, or why there is none."""

    configured: bool
    value: T | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.value is not None


@dataclass(frozen=True)
class ProbeTask(Generic[T]):
    """A probe and its dependency: tasks with equal keys read the same thing from the same
    server, so one run answers them all."""

    key: Hashable
    run: Callable[[], T]


@dataclass
class _Slot:
    """One dependency's executor, its latest probe and when that probe finished."""

    executor: ThreadPoolExecutor
    lock: threading.Lock = field(default_factory=threading.Lock)
    future: Future[Any] | None = None
    finished_at: float = float("-inf")


_SLOTS: dict[Hashable, _Slot] = {}
_SLOTS_LOCK = threading.Lock()


def _shared(task: ProbeTask[Any], reuse_seconds: float) -> Future[Any]:
    """The probe in flight for this dependency, its answer if fresh enough, or a new probe."""
    with _SLOTS_LOCK:
        slot = _SLOTS.get(task.key)
        if slot is None:
            slot = _SLOTS[task.key] = _Slot(ThreadPoolExecutor(1, thread_name_prefix="probe"))
    with slot.lock:
        latest = slot.future
        if latest is not None and (
            not latest.done() or time.monotonic() - slot.finished_at < reuse_seconds
        ):
            return latest

        def run() -> Any:
            try:
                return task.run()
            finally:
                slot.finished_at = time.monotonic()

        slot.future = slot.executor.submit(run)
        return slot.future


def run_probes(
    tasks: dict[str, ProbeTask[Any] | None], timeout: float, reuse_seconds: float = 0.0
) -> dict[str, Probe[Any]]:
    """Run each task in parallel; give up on any not done `timeout` seconds from now.

    A task of None is a server that is not configured. An answer at most `reuse_seconds` old
    is reused instead of probing again.
    """
    started = time.monotonic()
    futures = {
        name: _shared(task, reuse_seconds) for name, task in tasks.items() if task is not None
    }
    results: dict[str, Probe[Any]] = {}
    for name in tasks:
        future = futures.get(name)
        if future is None:
            results[name] = Probe(configured=False, error="not configured")
            continue
        try:
            value = future.result(timeout=max(0.0, started + timeout - time.monotonic()))
        except FutureTimeout:
            results[name] = Probe(configured=True, error=f"no answer within {timeout:g} s")
        except Exception as error:
            results[name] = Probe(configured=True, error=describe_error(error))
        else:
            results[name] = Probe(configured=True, value=value)
    return results


def describe_error(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "(no message)"
    return f"{type(error).__name__}: {text}"[:_ERROR_CHARS]


def configured_providers(settings: Settings) -> tuple[str, ...]:
    """Providers with a breaker that this deployment uses (console has none)."""
    used = (settings.resolved_email_provider, settings.resolved_sms_provider)
    return tuple(p for p in used if p is not None and guarded_by_breaker(p))


def redis_task(settings: Settings) -> ProbeTask[RedisState] | None:
    url = plain_secret(settings.redis_url)
    if url is None:
        return None

    def probe() -> RedisState:
        client = probe_client(url, settings.health_timeout)
        try:
            return read_redis_state(
                client,
                providers=configured_providers(settings),
                reset_timeout=settings.breaker_reset_timeout,
            )
        finally:
            client.close()

    return ProbeTask(("redis", settings), probe)


def database_task(
    settings: Settings,
    read: Callable[[FunctionCaller], T],
    application_name: str = "notifier-health",
) -> ProbeTask[T] | None:
    """Reads `read(caller)` from the database, directly or through the Supabase REST API;
    `application_name` names what is read (equal names share one probe), so give each reader
    its own."""
    if settings.resolved_backend is None:
        return None
    preload(settings)  # outside the probe's deadline

    def probe() -> T:
        with short_caller(
            settings,
            application_name=application_name,
            connect_timeout=settings.health_timeout,
            statement_timeout=settings.health_timeout,
        ) as caller:
            return read(caller)

    return ProbeTask(("database", application_name, settings), probe)
