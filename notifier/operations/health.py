"""`/health` and `/health/redis`: probe Redis and Postgres at once, each within a deadline, then
judge. Unhealthy: a server is unreachable (or not configured). Degraded: everything answers
but notifications may not flow (an open breaker, no live worker, a backlog, many failures, an
old due job, claiming paused); each reason is one readable sentence in `checks`.

The probes (notifier/operations/probes.py) answer within NOTIFIER_HEALTH_TIMEOUT whatever the
servers do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from notifier.config import Settings, plain_secret
from notifier.operations.probes import Probe, database_task, redis_task, run_probes
from notifier.operations.redis_state import RECENT_FAILURE_SECONDS, RedisState
from notifier.redaction import endpoint
from notifier.store.backend import endpoint as backend_endpoint
from notifier.store.base import FunctionCaller
from notifier.store.snapshot import Backlog, read_snapshot


@dataclass(frozen=True)
class Observation:
    redis: Probe[RedisState]
    database: Probe[Backlog]
    redis_endpoint: str | None
    database_endpoint: str | None
    at: datetime
    database_backend: str | None = None  # postgres | supabase (the REST API)
    database_latency_ms: float | None = None


@dataclass(frozen=True)
class TimedBacklog:
    backlog: Backlog
    latency_ms: float


def read_backlog(reader: FunctionCaller) -> TimedBacklog:
    """The health probe's reading: the snapshot's backlog alone (cheap, bounded by indexes),
    and how long the database (or the REST API) took to give it."""
    started = time.monotonic()
    backlog = read_snapshot(reader).backlog
    return TimedBacklog(backlog, round((time.monotonic() - started) * 1000, 1))


def observe(settings: Settings) -> Observation:
    """Both probes, in parallel, within NOTIFIER_HEALTH_TIMEOUT."""
    probes = run_probes(
        {"redis": redis_task(settings), "database": database_task(settings, read_backlog)},
        settings.health_timeout,
        settings.health_cache_seconds,
    )
    timed: Probe[TimedBacklog] = probes["database"]
    return Observation(
        redis=probes["redis"],
        database=Probe(timed.configured, timed.value.backlog if timed.value else None, timed.error),
        redis_endpoint=endpoint(plain_secret(settings.redis_url)),
        database_endpoint=backend_endpoint(settings),
        at=datetime.now(UTC),
        database_backend=settings.resolved_backend,
        database_latency_ms=timed.value.latency_ms if timed.value else None,
    )


def redis_problem(obs: Observation) -> str | None:
    return _unreachable("Redis", "REDIS_URL", obs.redis, obs.redis_endpoint)


def database_problem(obs: Observation) -> str | None:
    if obs.database_backend == "supabase":
        return _unreachable("The Supabase REST API", "SUPABASE_URL", obs.database,
                            obs.database_endpoint)  # fmt: skip
    return _unreachable("PostgreSQL", "DATABASE_URL", obs.database, obs.database_endpoint)


def _unreachable(name: str, variable: str, probe: Probe[Any], where: str | None) -> str | None:
    if not probe.configured:
        return f"{variable} is not set, so {name} cannot be checked."
    if not probe.ok and (probe.error or "").startswith(
        ("UndefinedTable", "UndefinedFunction", "StoreFunctionMissingError")
    ):
        return (
            f"{name} at {where} answers, but its schema is not up to date (run `notifier "
            f"migrate`): {probe.error}."
        )
    if not probe.ok:
        return f"{name} at {where} is unreachable: {probe.error}."
    return None


def unhealthy_reasons(obs: Observation) -> list[str]:
    return [p for p in (redis_problem(obs), database_problem(obs)) if p is not None]


def degraded_reasons(obs: Observation, settings: Settings) -> list[str]:
    """Why notifications may not flow although both servers answer (what they could tell)."""
    reasons = []
    redis = obs.redis.value
    if redis is not None:
        for breaker in redis.breakers.values():
            if breaker.state == "open":
                until = _iso(breaker.next_retry) or "its reset timeout"
                reasons.append(
                    f"The {breaker.provider} circuit breaker is open after "
                    f"{breaker.failure_count} failures: no {breaker.provider} requests are "
                    f"made and its jobs wait until {until}."
                )
        age = redis.freshest_heartbeat_age(obs.at)
        limit = settings.health_worker_stale_seconds
        if age is None:
            reasons.append(
                "No RQ worker is registered on notifier's queues: queued notifications are "
                "not being delivered."
            )
        elif age > limit:
            reasons.append(
                f"No RQ worker has sent a heartbeat in the last {limit} s (the freshest was "
                f"{age:.0f} s ago): workers may be down or stuck."
            )
    if redis is not None and redis.recent_rq_failures:
        reasons.append(
            f"{redis.recent_rq_failures:,} RQ job(s) failed inside a worker in the last "
            f"{RECENT_FAILURE_SECONDS // 60} min: a worker may be unable to deliver (its "
            "configuration, a crash); their notifications come back by lease. The reasons are "
            "in RQ's failed registry (`rq info`, `notifier status`)."
        )
    backlog = obs.database.value
    if backlog is not None:
        if backlog.paused:
            since = _iso(backlog.paused_at) or "an unknown time"
            by = f" by {backlog.paused_by}" if backlog.paused_by else ""
            why = f" ({backlog.paused_reason})" if backlog.paused_reason else ""
            if backlog.handed_back:
                reasons.append(
                    f"Claiming is paused since {since}{by}{why}: the queue is handed back to the "
                    "original worker (`notifier handback`); `notifier adopt` takes it over again."
                )
            else:
                reasons.append(
                    f"Claiming is paused since {since}{by}{why}: no new jobs are handed to "
                    "workers until `notifier resume`."
                )
        if backlog.parked_digest_schedules:
            reasons.append(
                f"{backlog.parked_digest_schedules:,} digest schedule(s) are parked "
                "(digest_settings.last_error): their recipients get each notification on its "
                "own until the schedule is corrected (docs/digests.md, Parked schedules)."
            )
        if backlog.due_now > settings.health_max_backlog:
            reasons.append(
                f"{backlog.due_now:,} jobs are due and waiting, over the limit of "
                f"{settings.health_max_backlog:,}."
            )
        oldest = backlog.oldest_due_seconds
        if oldest is not None and oldest > settings.health_max_due_age_seconds:
            reasons.append(
                f"The oldest due job has waited {oldest:.0f} s, over the limit of "
                f"{settings.health_max_due_age_seconds} s."
            )
        if backlog.failed_24h > settings.health_max_failed_24h:
            reasons.append(
                f"{backlog.failed_24h:,} jobs failed in the last 24 h, over the limit of "
                f"{settings.health_max_failed_24h:,}."
            )
    return reasons


def health_body(obs: Observation, settings: Settings) -> tuple[int, dict[str, Any]]:
    """`GET /health`: 200 healthy or degraded, 503 unhealthy."""
    unhealthy = unhealthy_reasons(obs)
    checks = unhealthy + degraded_reasons(obs, settings)
    status = "unhealthy" if unhealthy else ("degraded" if checks else "healthy")
    redis = obs.redis.value
    body: dict[str, Any] = {
        "status": status,
        "redis": {
            "configured": obs.redis.configured,
            "connected": obs.redis.ok,
            "circuitBreaker": redis.breaker_summary() if redis else "closed",
            "endpoint": obs.redis_endpoint,
            "latencyMs": redis.latency_ms if redis else None,
        },
        "database": {
            "configured": obs.database.configured,
            "connected": obs.database.ok,
            "endpoint": obs.database_endpoint,
            "backend": obs.database_backend,
            "latencyMs": obs.database_latency_ms,
        },
        # Which provider serves each channel; null: its jobs fail ("no … provider").
        "providers": {
            "email": settings.resolved_email_provider,
            "sms": settings.resolved_sms_provider,
            "whatsapp": settings.resolved_sms_provider,
        },
        "checks": checks,
        "timestamp": obs.at.isoformat(),
    }
    return (503 if unhealthy else 200), body


def redis_health_body(obs: Observation, settings: Settings) -> tuple[int, dict[str, Any]]:
    """`GET /health/redis`: the original worker's fields, plus workers, breakers, backlog.

    healthy 200; degraded or unavailable (Redis not configured or unreachable) 503.
    """
    redis = obs.redis.value
    problems = [p for p in (redis_problem(obs), database_problem(obs)) if p is not None]
    warnings = problems + degraded_reasons(obs, settings)
    status = "unavailable" if redis is None else ("degraded" if warnings else "healthy")
    body: dict[str, Any] = {
        "status": status,
        "redis_configured": obs.redis.configured,
        "redis_connected": obs.redis.ok,
        # Without Redis the workers' breakers read as closed too (pybreaker's fallback).
        "circuit_breaker": redis.breaker_summary() if redis else "closed",
        "queue_metrics": _queue_metrics(redis),
        "warnings": warnings,
        "timestamp": obs.at.isoformat(),
        "redis": {
            "endpoint": obs.redis_endpoint,
            "latency_ms": redis.latency_ms if redis else None,
            "memory_used_bytes": redis.memory_used_bytes if redis else None,
            "memory_used_human": redis.memory_used_human if redis else None,
            "error": obs.redis.error,
        },
        "workers": _workers(redis, obs.at),
        "breakers": _breakers(redis),
        "backlog": _backlog(obs),
    }
    return (200 if status == "healthy" else 503), body


def _queue_metrics(redis: RedisState | None) -> dict[str, Any]:
    """Totals at the top (flat, as monitors of the original worker read them), per queue below."""
    if redis is None:
        return {}
    return {
        **redis.totals.as_dict(),
        "queues": {name: counts.as_dict() for name, counts in redis.queues.items()},
    }


def _workers(redis: RedisState | None, now: datetime) -> dict[str, Any]:
    if redis is None:
        return {"count": None, "workers": []}
    return {
        "count": len(redis.workers),
        "workers": [
            {
                "name": w.name,
                "state": w.state,
                "current_job": w.current_job,
                "last_heartbeat": _iso(w.last_heartbeat),
                "heartbeat_age_seconds": _round(w.heartbeat_age(now)),
                "hostname": w.hostname,
                "pid": w.pid,
            }
            for w in redis.workers
        ],
    }


def _breakers(redis: RedisState | None) -> dict[str, Any]:
    if redis is None:
        return {}
    return {
        b.provider: {
            "state": b.state,
            "failure_count": b.failure_count,
            "opened_at": _iso(b.opened_at),
            "next_retry": _iso(b.next_retry),
        }
        for b in redis.breakers.values()
    }


def _backlog(obs: Observation) -> dict[str, Any]:
    if obs.database.value is None:
        return {"database_connected": False, "error": obs.database.error}
    return {"database_connected": True, **obs.database.value.as_dict()}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
