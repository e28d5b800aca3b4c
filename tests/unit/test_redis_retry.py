"""notifier.pipeline.redis_retry: a client built from a URL in a worker retries for tens of
seconds, an explicit `retry=` is kept. Run in a child interpreter: install() is process-wide."""

from __future__ import annotations

import random
import subprocess
import sys

from notifier.pipeline import redis_retry

PROBE = """
from redis import Redis
from redis.retry import Retry
from redis.backoff import NoBackoff
from notifier.pipeline import redis_retry
def retries(client):  # what each new connection of the client's pool will do
    return client.connection_pool.make_connection().retry.get_retries()
before = retries(Redis.from_url("redis://127.0.0.1:1/0"))
redis_retry.install(); redis_retry.install()
after = retries(Redis.from_url("redis://127.0.0.1:1/0"))
explicit = retries(Redis.from_url("redis://127.0.0.1:1/0", retry=Retry(NoBackoff(), 2)))
print(before, after, explicit)
"""


def test_install_makes_url_clients_patient_and_keeps_an_explicit_retry() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    before, after, explicit = (int(n) for n in done.stdout.split())
    assert before == 0  # redis-py 8: a client built from a URL does not retry at all
    assert after == redis_retry.patient_retry().get_retries() >= 20
    assert explicit == 2


def test_the_patient_retry_lasts_tens_of_seconds_on_average() -> None:
    retry = redis_retry.patient_retry()
    backoff = retry._backoff
    random.seed(12)
    waited = sum(backoff.compute(attempt) for attempt in range(1, retry.get_retries() + 1))
    assert 20 <= waited <= 40, f"{waited:.1f} s of backoff in all"
