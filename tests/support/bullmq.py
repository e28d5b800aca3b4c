"""A real BullMQ queue for tests: the npm `bullmq` package, driven by bullmq_driver.js.

`install()` runs `npm install bullmq@<BULLMQ_VERSION> ioredis@<IOREDIS_VERSION>` once into
`<tmp>/notifier-bullmq-<version>` (a marker file records a complete install, a file lock keeps
concurrent sessions from installing twice); later sessions reuse it. Cold ≈ 4 s, warm ≈ 0.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from redis import Redis

BULLMQ_VERSION = "6.7.0"
# The newest 5.x too: deployments of the original worker are likelier to run 5 than 6. Both
# lay out a queue the same way (their removal scripts are identical).
TESTED_VERSIONS = (BULLMQ_VERSION, "5.81.5")
IOREDIS_VERSION = "5.11.1"
DRIVER = Path(__file__).with_name("bullmq_driver.js")
QUEUE = "notification-queue"


def node_and_npm_found() -> bool:
    return shutil.which("node") is not None and shutil.which("npm") is not None


def install_dir(version: str = BULLMQ_VERSION) -> Path:
    return Path(tempfile.gettempdir()) / f"notifier-bullmq-{version}"


def install(version: str = BULLMQ_VERSION) -> Path:
    """The directory holding node_modules/bullmq at `version`, installing it the first time."""
    directory = install_dir(version)
    marker = directory / ".installed"
    if marker.exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return directory
        (directory / "package.json").write_text('{"name": "notifier-bullmq-test", "private": true}')
        started = time.monotonic()
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
             f"bullmq@{version}", f"ioredis@{IOREDIS_VERSION}"],
            cwd=directory, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"npm install bullmq@{version} failed:\n{done.stderr}")
        marker.write_text(f"{version} installed in {time.monotonic() - started:.1f} s\n")
    return directory


class OldWorkerQueue:
    """The original worker's BullMQ queue `notification-queue` in the test Redis."""

    def __init__(self, directory: Path, redis_url: str, queue: str = QUEUE) -> None:
        self.directory, self.redis_url, self.queue = directory, redis_url, queue
        self.env = {**os.environ, "NODE_PATH": str(directory / "node_modules")}

    def _run(self, command: str, **payload: Any) -> Any:
        done = subprocess.run(
            ["node", str(DRIVER), command], input=json.dumps(self._payload(payload)),
            env=self.env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"bullmq_driver {command} failed:\n{done.stderr}"
        return json.loads(done.stdout)

    def _payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"url": self.redis_url, "queue": self.queue, **payload}

    def seed(self, jobs: list[dict[str, Any]]) -> dict[str, str]:
        """Add jobs (`id`, `data`, `scenario`) and run a worker over them; returns each state."""
        return dict(self._run("seed", jobs=jobs))

    def hold_active(self, job: dict[str, Any], lock_ms: int) -> None:
        """Leave `job` active with a lock expiring after `lock_ms`: its worker is SIGKILLed."""
        worker = subprocess.Popen(
            ["node", str(DRIVER), "hold"], env=self.env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.write(json.dumps(self._payload({"job": job, "lockMs": lock_ms})))
        worker.stdin.close()
        try:
            assert worker.stdout.readline().strip() == "active", worker.stderr
        finally:
            worker.kill()
            worker.wait(timeout=10)

    @contextlib.contextmanager
    def running_worker(self) -> Iterator[None]:
        """The old worker left running: a BullMQ Worker connected to the queue."""
        worker = subprocess.Popen(
            ["node", str(DRIVER), "run"], env=self.env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert worker.stdin is not None
        worker.stdin.write(json.dumps(self._payload({})))
        worker.stdin.close()
        client = Redis.from_url(self.redis_url, decode_responses=True)
        try:
            deadline = time.monotonic() + 15
            while not any(str(c.get("name", "")).startswith("bull:") for c in client.client_list()):
                assert time.monotonic() < deadline and worker.poll() is None, worker.stderr
                time.sleep(0.05)
            yield
        finally:
            client.close()
            worker.kill()
            worker.wait(timeout=10)

    def drain(self, ms: int = 1500) -> list[str]:
        """Start the old worker again for `ms`; returns the ids it processed."""
        return list(self._run("drain", ms=ms))

    def states(self, ids: list[str]) -> dict[str, str]:
        """BullMQ's own `getJobState` for each id ('unknown' once removed)."""
        return dict(self._run("states", ids=ids))
