"""Builds the long-lived parts of a process (store, Redis, breakers, providers) from settings."""

from __future__ import annotations

import threading

from notifier.config import Settings
from notifier.pipeline.breaker import STATE_CACHE_SECONDS, ProviderBreaker
from notifier.pipeline.delivery import Deliverer, DeliveryPolicy
from notifier.pipeline.poller import Poller, PollerPolicy
from notifier.pipeline.queues import redis_connection
from notifier.pipeline.render import Renderer, default_template_dir
from notifier.store import JobStore
from notifier.store.backend import backend, open_caller
from notifier.store.feedback import FeedbackStore


def build_store(settings: Settings, *, pool_size: int, check: bool = False) -> JobStore:
    """The job store over DATABASE_URL or the Supabase REST API (notifier/store/backend.py),
    with as many connections as the process has threads that use it. `check`: one call now,
    so a refused key stops the process at start-up."""
    caller = open_caller(settings, pool_size=pool_size, check=check)
    return JobStore(caller)


def build_poller(settings: Settings, *, stopping: threading.Event | None = None) -> Poller:
    """A poller over the store and REDIS_URL (two database connections: claims, reaper). Over
    DATABASE_URL it LISTENs for due jobs; over the REST API it polls alone."""
    policy = PollerPolicy(
        poll_interval=settings.poll_interval,
        reaper_interval=settings.reaper_interval,
        claim_batch_size=settings.claim_batch_size,
        rq_job_size=settings.rq_job_size,
        max_in_flight=settings.max_in_flight,
        max_queued_rq_jobs=settings.max_queued_rq_jobs,
        lease_seconds=settings.lease_seconds,
        unknown_outcome=settings.unknown_outcome,
        rq_job_timeout=settings.rq_job_timeout,
    )
    redis = redis_connection(settings.require_redis_url())
    listen_url = settings.require_database_url() if backend(settings) == "postgres" else None
    store = build_store(settings, pool_size=2, check=listen_url is None)
    return Poller(store, redis, listen_url, policy, stopping=stopping)


def build_deliverer(settings: Settings) -> Deliverer:
    """Everything a worker needs; one per worker process."""
    # Imported here: the registry loads the SendGrid and Twilio SDKs (~0.3 s), which the poller
    # and the scheduler, built from this module too, never need.
    from notifier.providers.registry import build_providers

    # The breakers' own client: short timeout, no retries, so a slow or lost Redis costs a send
    # at most a second (the storage then reports the breaker closed) instead of minutes.
    redis = redis_connection(settings.require_redis_url(), timeout=0.5, retries=0)
    providers = build_providers(settings)
    breakers = {
        provider.name: ProviderBreaker(
            provider.name,
            redis,
            fail_max=settings.breaker_fail_max,
            reset_timeout=settings.breaker_reset_timeout,
            trial_seconds=2 * settings.provider_timeout + 1,
            cache_seconds=STATE_CACHE_SECONDS,
        )
        for provider in providers.values()
        if provider.guarded_by_breaker
    }
    renderer = Renderer(settings.template_dir or default_template_dir())
    policy = DeliveryPolicy(
        lease_seconds=settings.lease_seconds,
        backoff_base_seconds=settings.backoff_base_seconds,
        backoff_cap_seconds=settings.backoff_cap_seconds,
        send_concurrency=settings.send_concurrency,
        unsubscribe_url_base=settings.resolved_unsubscribe_url_base,
        unknown_outcome=settings.unknown_outcome,
    )
    # Each send holds a connection only for its start and record calls (about a millisecond
    # each), so NOTIFIER_DB_POOL_SIZE connections serve many more send threads; one per thread
    # would cost hundreds of server connections across a few worker processes. The feedback
    # store (suppressions after a refusal) shares the pool.
    pool_size = min(settings.send_concurrency, settings.db_pool_size) + 1
    caller = open_caller(settings, pool_size=pool_size)
    return Deliverer(JobStore(caller), providers, breakers, renderer, policy, FeedbackStore(caller))
