"""Running the production commands against the test servers, as an operator would type them."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from notifier.devstack.demo import poller_command, worker_command

WORKER_LINE = ["rq", "worker", "-c", "notifier.rq_settings"]


def run(
    cmd: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def poller_burst(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run(poller_command("--burst"), env)


def start_poller(env: dict[str, str], timeout: float = 30) -> subprocess.Popen[str]:
    """Start `notifier poller` and return once it logs `poller_started` (it is LISTENing);
    its stderr is drained in the background so it never blocks on a full pipe."""
    process = subprocess.Popen(
        poller_command(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    ready = threading.Event()

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if "poller_started" in line:
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(timeout):
        process.kill()
        raise AssertionError(f"notifier poller did not start within {timeout} s")
    return process


def worker_burst(env: dict[str, str], *, simple: bool = False) -> subprocess.CompletedProcess[str]:
    """The documented lines: `rq worker -c notifier.rq_settings --burst` (forking), or with
    `-w rq.worker.SimpleWorker`."""
    if simple:
        return run(worker_command("--burst"), env)
    return run([*worker_command()[:4], "--burst"], env)


def wait_for(condition: Callable[[], Any], timeout: float = 30, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def statuses(db: psycopg.Connection[Any]) -> dict[str, int]:
    rows = db.execute(
        "select status, count(*) as n from notification_jobs group by status"
    ).fetchall()
    return {row["status"]: row["n"] for row in rows}
