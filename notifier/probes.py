"""Reading Redis and Postgres against a deadline, for /health, /metrics and `notifier status`.

Probes run in a small thread pool and the caller waits at most its timeout: a probe still
blocked then (a server that accepts connections and never answers) is reported as having given
no answer, and its thread ends by its own socket and statement timeouts. Clients are made for
the probe and closed after it, so a broken connection never outlives one answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from notifier.config import Settings
from notifier.db_state import connect
from notifier.redaction import plain
from notifier.redis_state import RedisState, probe_client, read_redis_state

T = TypeVar("T")
_PROBES = ThreadPoolExecutor(max_workers=16, thread_name_prefix="probe")
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


def run_probes(tasks: dict[str, Callable[[], Any] | None], timeout: float) -> dict[str, Probe[Any]]:
    """Run each task in parallel; give up on any not done `timeout` seconds from now.

    A task of None is a server that is not configured.
    """
    started = time.monotonic()
    futures = {name: _PROBES.submit(task) for name, task in tasks.items() if task is not None}
    results: dict[str, Probe[Any]] = {}
    for name in tasks:
        future = futures.get(name)
        if future is None:
            results[name] = Probe(configured=False, error="not configured")
            continue
        try:
            value = future.result(timeout=max(0.0, started + timeout - time.monotonic()))
        except FutureTimeout:
            future.cancel()
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
    return tuple(p for p in used if p != "console")


def redis_task(settings: Settings) -> Callable[[], RedisState] | None:
    url = plain(settings.redis_url)
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

    return probe


def database_task(
    settings: Settings, read: Callable[[Any], T], application_name: str = "notifier-health"
) -> Callable[[], T] | None:
    url = plain(settings.database_url)
    if url is None:
        return None

    def probe() -> T:
        with connect(
            url,
            connect_timeout=settings.health_timeout,
            statement_timeout=settings.health_timeout,
            application_name=application_name,
        ) as conn:
            return read(conn)

    return probe
