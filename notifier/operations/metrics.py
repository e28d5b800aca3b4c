"""`GET /metrics`: Prometheus metrics derived at scrape time from Postgres and Redis.

Workers are separate processes, possibly on other machines, so nothing is counted in-process:
a custom collector reads the job table, the delivery log and Redis when Prometheus scrapes,
within NOTIFIER_HEALTH_TIMEOUT (a server that does not answer in time is reported by
`notifier_up{component=...} 0` and its metrics are left out of that scrape).

Figures over a window are gauges, not counters, because they go down as rows age out of the
window. Distributions over the window are OpenMetrics gauge histograms (`_bucket`, `_gcount`,
`_gsum`): read a quantile with `histogram_quantile(0.95, notifier_delivery_latency_seconds_bucket)`
directly, without `rate()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from notifier.config import Settings
from notifier.operations.probes import configured_providers, database_task, redis_task, run_probes
from notifier.operations.redis_state import REGISTRIES, RedisState
from notifier.pipeline.queues import QUEUE_NAMES
from notifier.store.base import FunctionCaller
from notifier.store.model import FINISHED, UNFINISHED, DeliveryMethod, JobStatus
from notifier.store.snapshot import Counts, Snapshot, read_snapshot

BREAKER_STATES = ("closed", "half-open", "open")


def window_text(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"the last {seconds // 3600} h"
    if seconds % 60 == 0:
        return f"the last {seconds // 60} min"
    return f"the last {seconds} s"


class NotifierCollector(Collector):
    """Collects notifier's metrics from Postgres and Redis on every scrape."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def collect(self) -> Iterator[Metric]:
        settings = self._settings
        window = settings.metrics_window_seconds
        probes = run_probes(
            {
                "redis": redis_task(settings),
                "postgres": database_task(
                    settings, lambda reader: read_scrape(reader, window), "notifier-metrics"
                ),
            },
            settings.health_timeout,
            settings.health_cache_seconds,
        )
        up = GaugeMetricFamily(
            "notifier_up",
            "1 when the component answered this scrape within NOTIFIER_HEALTH_TIMEOUT, else 0",
            labels=["component"],
        )
        for component, probe in probes.items():
            up.add_metric([component], 1.0 if probe.ok else 0.0)
        yield up
        redis = probes["redis"].value
        if redis is not None:
            yield from _redis_metrics(redis, configured_providers(settings))
        snapshot = probes["postgres"].value
        if snapshot is not None:
            yield from _database_metrics(snapshot, window_text(window))


def read_scrape(reader: FunctionCaller, window_seconds: int) -> Snapshot:
    """A scrape's reading: the backlog, the flow and the window's activity (no whole-table
    count: a scrape is bounded by indexes)."""
    return read_snapshot(reader, flow=True, window_seconds=window_seconds)


def build_registry(settings: Settings) -> CollectorRegistry:
    """A registry holding only notifier's collector (the web process has no state of its own)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NotifierCollector(settings))
    return registry


def _redis_metrics(redis: RedisState, providers: tuple[str, ...]) -> Iterator[Metric]:
    depth = GaugeMetricFamily(
        "notifier_queue_depth",
        "RQ jobs waiting in each notifier queue (each carries up to NOTIFIER_RQ_JOB_SIZE "
        "notifications)",
        labels=["queue"],
    )
    registry = GaugeMetricFamily(
        "notifier_queue_registry_jobs",
        "RQ jobs in each queue's started, failed, deferred and scheduled registries",
        labels=["queue", "registry"],
    )
    for name in QUEUE_NAMES:
        counts = redis.queues[name]
        depth.add_metric([name], float(counts.queued))
        for registry_name in REGISTRIES:
            registry.add_metric([name, registry_name], float(getattr(counts, registry_name)))
    yield depth
    yield registry

    workers = GaugeMetricFamily(
        "notifier_workers", "RQ workers registered on notifier's queues, by state", labels=["state"]
    )
    by_state: dict[str, int] = {}
    for worker in redis.workers:
        by_state[worker.state] = by_state.get(worker.state, 0) + 1
    for state, count in sorted(by_state.items()):
        workers.add_metric([state], float(count))
    yield workers
    yield GaugeMetricFamily(
        "notifier_workers_registered",
        "RQ workers registered on notifier's queues",
        value=float(len(redis.workers)),
    )
    age = redis.freshest_heartbeat_age(datetime.now(UTC))
    if age is not None:
        yield GaugeMetricFamily(
            "notifier_worker_heartbeat_age_seconds",
            "Seconds since the most recent heartbeat of any RQ worker on notifier's queues",
            value=age,
        )

    breaker_state = GaugeMetricFamily(
        "notifier_circuit_breaker_state",
        "1 for the provider breaker's current state (open past its reset timeout counts as "
        "half-open: the next request is a trial)",
        labels=["provider", "state"],
    )
    failures = GaugeMetricFamily(
        "notifier_circuit_breaker_failures",
        "Consecutive transient failures counted by the provider's breaker",
        labels=["provider"],
    )
    for provider in sorted(set(providers) | set(redis.breakers)):
        breaker = redis.breakers.get(provider)
        current = breaker.state if breaker else "closed"
        for candidate in BREAKER_STATES:
            breaker_state.add_metric([provider, candidate], 1.0 if candidate == current else 0.0)
        failures.add_metric([provider], float(breaker.failure_count if breaker else 0))
    yield breaker_state
    yield failures

    yield GaugeMetricFamily(
        "notifier_redis_latency_seconds",
        "Round trip of a Redis PING",
        value=redis.latency_ms / 1000,
    )
    if redis.memory_used_bytes is not None:
        yield GaugeMetricFamily(
            "notifier_redis_memory_used_bytes",
            "Memory used by Redis (INFO used_memory)",
            value=float(redis.memory_used_bytes),
        )


def _database_metrics(snapshot: Snapshot, window: str) -> Iterator[Metric]:
    flow, activity = snapshot.flow, snapshot.activity
    jobs = GaugeMetricFamily(
        "notifier_jobs",
        "Jobs pending (due or scheduled), queued, processing or held for a digest now, by "
        "delivery method",
        labels=["status", "method"],
    )
    _fill(jobs, activity.unfinished, UNFINISHED)
    yield jobs
    finished = GaugeMetricFamily(
        "notifier_jobs_finished_24h",
        "Jobs that became sent, failed, skipped, cancelled or digested (carried by a digest) in "
        "the last 24 h, by method",
        labels=["status", "method"],
    )
    _fill(finished, flow.finished_24h, FINISHED)
    yield finished

    due = GaugeMetricFamily(
        "notifier_backlog_due", "Pending jobs due now (not yet claimed)", labels=["method"]
    )
    waiting_retry = GaugeMetricFamily(
        "notifier_jobs_awaiting_retry",
        "Pending jobs due now that already failed at least one attempt",
        labels=["method"],
    )
    due_by_method = {d.method: d for d in flow.due}
    for method in DeliveryMethod:
        row = due_by_method.get(method)
        due.add_metric([method], float(row.count if row else 0))
        waiting_retry.add_metric([method], float(row.awaiting_retry if row else 0))
    yield due
    yield waiting_retry
    yield GaugeMetricFamily(
        "notifier_backlog_oldest_due_seconds",
        "How long the oldest pending due job has been waiting (0 when none is due)",
        value=max(0.0, snapshot.backlog.oldest_due_seconds or 0.0),
    )
    yield GaugeMetricFamily(
        "notifier_held_oldest_seconds",
        "How long the oldest job held for a digest has been held (0 when none is)",
        value=max(0.0, activity.oldest_held_seconds or 0.0),
    )
    yield GaugeMetricFamily(
        "notifier_paused",
        "1 while claiming is paused (notifier pause)",
        value=float(snapshot.backlog.paused),
    )

    deliveries = GaugeMetricFamily(
        "notifier_deliveries",
        f"Delivery attempts recorded in {window}, by provider, method and outcome (the "
        "delivery log status: delivered, failed, bounced, blocked, muted, unknown)",
        labels=["provider", "method", "outcome"],
    )
    retries = GaugeMetricFamily(
        "notifier_delivery_retries",
        f"Delivery attempts in {window} that were retries (attempt 2 or later), by provider",
        labels=["provider"],
    )
    retry_totals: dict[str, int] = {}
    for attempts in activity.deliveries:
        labels = [attempts.provider, attempts.method, attempts.outcome]
        deliveries.add_metric(labels, float(attempts.count))
        retry_totals[attempts.provider] = retry_totals.get(attempts.provider, 0) + attempts.retries
    for provider, count in sorted(retry_totals.items()):
        retries.add_metric([provider], float(count))
    yield deliveries
    yield retries

    latency = GaugeHistogramMetricFamily(
        "notifier_delivery_latency_seconds",
        f"Seconds from a job's scheduled_for (when it was last due) to the provider accepting "
        f"it, for deliveries in {window}",
        labels=["provider"],
    )
    for provider, histogram in sorted(activity.latency.items()):
        latency.add_metric([provider], histogram.buckets, histogram.total)
    yield latency
    duration = GaugeHistogramMetricFamily(
        "notifier_provider_request_duration_seconds",
        f"Seconds per provider request (any outcome), for attempts in {window}",
        labels=["provider"],
    )
    for provider, histogram in sorted(activity.duration.items()):
        duration.add_metric([provider], histogram.buckets, histogram.total)
    yield duration

    feedback = GaugeMetricFamily(
        "notifier_feedback_events",
        f"Provider events (signed webhooks) recorded for {window}, by method, event (bounce, "
        "spamreport, unsubscribe, undelivered, ...) and the delivery-log status they added",
        labels=["method", "event", "status"],
    )
    for item in activity.feedback:
        feedback.add_metric([item.method, item.event, item.status], float(item.count))
    yield feedback
    suppressed = GaugeMetricFamily(
        "notifier_suppressed_addresses",
        "Addresses on the suppression list, by channel and source (sendgrid, twilio, "
        "one-click, operator)",
        labels=["channel", "source"],
    )
    for (channel, source), count in sorted((activity.suppressions or {}).items()):
        suppressed.add_metric([channel, source], float(count))
    yield suppressed


def _fill(metric: GaugeMetricFamily, counts: Counts, statuses: tuple[JobStatus, ...]) -> None:
    """Every (status, method) pair, zero when absent, so series do not vanish between scrapes."""
    for status in statuses:
        for method in DeliveryMethod:
            metric.add_metric([status, method], float(counts.get((status, method), 0)))
