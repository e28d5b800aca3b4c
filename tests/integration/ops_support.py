"""Helpers for the operations tests: settings, an in-process web server, HTTP, metrics parsing,
RQ workers registered by hand, and rows in any state."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from redis import Redis
from rq import Queue, Worker

from notifier.config import Settings, load_settings
from notifier.operations.web import make_server, run_until, stop_serving
from notifier.pipeline.queues import QUEUE_NAMES


def make_settings(database_url: str | None, redis_url: str | None, **extra: Any) -> Settings:
    """Settings for these servers; console providers unless `extra` says otherwise. Probe
    answers are not reused (each request sees what the test just changed) unless asked."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "email_provider": "console",
        "sms_provider": "console",
        "health_cache_seconds": 0,
    }
    values.update(extra)
    return load_settings(**values)


@contextmanager
def running_web(settings: Settings) -> Iterator[str]:
    """The web app served by waitress in a thread on a free loopback port; yields its base URL."""
    server = make_server(settings.model_copy(update={"port": 0, "web_host": "127.0.0.1"}))
    stop = threading.Event()
    thread = threading.Thread(target=run_until, args=(server, stop), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        stop_serving(server, stop)
        thread.join(timeout=10)
        close = getattr(server.application, "close", None)
        if close is not None:
            close()


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    text: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.text)


def get(base_url: str, path: str, accept: str | None = None, timeout: float = 10) -> Answer:
    request = urllib.request.Request(base_url + path, headers={"Accept": accept} if accept else {})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            status, headers = response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        body = error.read()
        status, headers = error.code, dict(error.headers)
    return Answer(status, headers, body.decode("utf-8"), time.monotonic() - started)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """`{(name, {(label, value), ...}): value}` for every sample of a text exposition."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        samples[(name, frozenset(_LABEL.findall(labels or "")))] = float(value)
    return samples


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@contextmanager
def registered_worker(redis: Redis, name: str, heartbeat_age: float = 0.0) -> Iterator[Worker]:
    """An RQ worker record on notifier's queues, as a running worker leaves it in Redis."""
    worker = Worker([Queue(n, connection=redis) for n in QUEUE_NAMES], connection=redis, name=name)
    worker.register_birth()
    worker.set_state("idle")
    beat = datetime.now(UTC) - timedelta(seconds=heartbeat_age)
    redis.hset(worker.key, "last_heartbeat", beat.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    try:
        yield worker
    finally:
        worker.register_death()


def insert_jobs(
    db: psycopg.Connection[Any],
    recipient: str,
    n: int,
    *,
    status: str = "pending",
    method: str = "email",
    scheduled_ago_seconds: float = 0.0,
    failure_reason: str | None = None,
    processed_ago_seconds: float | None = None,
) -> list[str]:
    """`n` jobs in any state, written directly (a test's shortcut, not how notifier changes
    state)."""
    rows = db.execute(
        "insert into notification_jobs (recipient_id, notification_type, delivery_method, status,"
        " content, scheduled_for, failure_reason, processed_at, retry_count)"
        " select %(r)s, 'immediate', %(m)s, %(s)s::varchar, jsonb_build_object('body', 'n' || i),"
        " now() - make_interval(secs => %(ago)s), %(reason)s,"
        " case when %(done)s::float8 is null then null"
        "      else now() - make_interval(secs => %(done)s::float8) end,"
        " case when %(s)s::varchar = 'failed' then 3 else 0 end"
        " from generate_series(1, %(n)s) i returning id",
        {"r": recipient, "m": method, "s": status, "ago": scheduled_ago_seconds,
         "reason": failure_reason, "done": processed_ago_seconds, "n": n},
    ).fetchall()  # fmt: skip
    return [str(row["id"]) for row in rows]
