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
from notifier.store.postgres import PostgresCaller


def build_store(settings: Settings, *, pool_size: int | None = None) -> JobStore:
    """The job store over DATABASE_URL."""
    caller = PostgresCaller(
        settings.require_database_url(), max_size=pool_size or settings.db_pool_size
    )
    return JobStore(caller)


def build_poller(settings: Settings, *, stopping: threading.Event | None = None) -> Poller:
    """A poller over DATABASE_URL and REDIS_URL (two database connections: claims, reaper)."""
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
    database_url = settings.require_database_url()
    return Poller(
        build_store(settings, pool_size=2), redis, database_url, policy, stopping=stopping
    )


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
        unsubscribe_url_base=settings.unsubscribe_url_base,
        unknown_outcome=settings.unknown_outcome,
    )
    # Each send holds a connection only for its start and record calls (about a millisecond
    # each), so NOTIFIER_DB_POOL_SIZE connections serve many more send threads; one per thread
    # would cost hundreds of server connections across a few worker processes.
    pool_size = min(settings.send_concurrency, settings.db_pool_size) + 1
    store = build_store(settings, pool_size=pool_size)
    return Deliverer(store, providers, breakers, renderer, policy)
