"""A Redis restart (down ~2 s, data lost) while stock `rq worker`s are inside an RQ job must not
end them: RQ 3 quits on any Redis error raised with a job in hand, and redis-py's default
retry gives up within about 2 s. `notifier.rq_settings` makes the connection retry longer
(notifier/pipeline/redis_retry.py); the worker lines here are the documented ones."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue

from notifier.devstack.demo import worker_command
from notifier.devstack.servers import LocalRedis
from notifier.pipeline.queues import QUEUE_NAMES
from tests.integration.pipeline import wait_for

FORKING = [part for part in worker_command() if part not in ("-w", "rq.worker.SimpleWorker")]
JOB_SECONDS = 1.5  # ends while Redis is down: the worker then has to finish the job
DOWN_SECONDS = 3.0


@pytest.fixture
def own_redis(redis_server: LocalRedis) -> Iterator[LocalRedis]:
    """A Redis of this test's own (it is restarted); redis_server only proves one can start."""
    with LocalRedis() as server:
        yield server


def test_workers_ride_out_a_redis_restart_inside_a_job(
    own_redis: LocalRedis, base_env: dict[str, str], tmp_path: Path
) -> None:
    env = base_env | {"REDIS_URL": own_redis.url}
    logs = [tmp_path / "forking.log", tmp_path / "simple.log"]
    workers = []
    for cmd, log in zip((FORKING, worker_command()), logs, strict=True):
        with log.open("wb") as out:
            workers.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT))
    redis = Redis.from_url(own_redis.url)
    try:
        wait_for(lambda: redis.scard("rq:workers") == 2, timeout=60)
        queue = Queue(QUEUE_NAMES[1], connection=redis)
        jobs = [queue.enqueue("time.sleep", JOB_SECONDS) for _ in workers]
        wait_for(lambda: all(j.get_status(refresh=True) == "started" for j in jobs), timeout=30)

        own_redis.restart(DOWN_SECONDS)  # both workers are inside their job
        time.sleep(JOB_SECONDS + 2)

        exited = {log.name: p.poll() for p, log in zip(workers, logs, strict=True)}
        assert all(code is None for code in exited.values()), (
            exited, [log.read_text()[-3000:] for log in logs]
        )  # fmt: skip
        # Both still work: two jobs long enough that each worker has to take one.
        queue = Queue(QUEUE_NAMES[1], connection=redis)
        after = [queue.enqueue("time.sleep", 1.0) for _ in workers]
        wait_for(lambda: all(j.get_status(refresh=True) == "finished" for j in after), timeout=30)
        for job in after:
            job.refresh()
        assert len({job.worker_name for job in after}) == 2, "one worker no longer takes jobs"
        assert all(p.poll() is None for p in workers)
    finally:
        redis.close()
        for process in workers:
            process.terminate()
        for process in workers:
            process.wait(timeout=30)
