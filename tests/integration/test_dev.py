"""`notifier dev`, the README's "run" command, works from a clean directory, keeps running after
the demo until Ctrl-C, and prints a psql line and an enqueue call that work when pasted."""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

import psycopg

from notifier.devstack.demo import command
from tests.integration.conftest import REPO
from tests.integration.pipeline import wait_for


class Output:
    """Lines a process prints, collected by a thread (a pipe read never blocks the test)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert process.stdout is not None
        stream = process.stdout
        threading.Thread(target=lambda: [self.lines.put(x) for x in stream], daemon=True).start()

    def until(self, marker: str, timeout: float) -> str:
        """Everything printed so far, once a line holding `marker` has been printed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if marker in line:
                return "".join(self.seen)
        raise AssertionError(f"{marker!r} not printed in {timeout} s:\n{''.join(self.seen)[-3000:]}")

    def rest(self) -> str:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "".join(self.seen)


def test_dev_delivers_the_demo_then_keeps_running_until_ctrl_c(
    tmp_path: Path, pg_server: object, redis_server: object
) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NOTIFIER_", "SENDGRID_", "TWILIO_", "DATABASE_URL", "REDIS_URL"))
    }
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    outbox = tmp_path / "outbox"
    process = subprocess.Popen(
        command("notifier", "dev", "--outbox", str(outbox)),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as in a terminal
    )
    printed = Output(process)
    try:
        output = printed.until("Running until Ctrl-C", timeout=120)
        table = output[output.rindex("id  ") :]
        assert table.count(" sent ") == 4
        assert "skipped" in table and "recipient is muted" in table
        assert "failed" in table and "rejected the address" in table
        emails = sorted(outbox.glob("*.eml"))
        assert len(emails) == 3
        assert any("Happy birthday &lt;Lily&gt;" in e.read_text() for e in emails), "HTML escaped"
        assert len(list(outbox.glob("*.txt"))) == 1

        time.sleep(10)  # it used to exit by itself about 8 s after the demo
        assert process.poll() is None, "notifier dev stopped by itself"

        # Paste the printed lines, as a newcomer would: psql <url>, then the SQL call.
        psql_line = re.search(r"^\s+(\S*psql '[^']+')$", output, re.M)
        call = re.search(r"^\s+(SELECT enqueue_notification_job\(.*\);)$", output, re.M)
        assert psql_line is not None and call is not None, output[-2000:]
        pasted = subprocess.run(
            [*shlex.split(psql_line.group(1)), "-v", "ON_ERROR_STOP=1", "-At", "-c",
             call.group(1)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert pasted.returncode == 0, pasted.stderr
        job_id = pasted.stdout.strip()
        url = shlex.split(psql_line.group(1))[1]

        def status() -> str | None:
            with psycopg.connect(url) as conn:
                row = conn.execute(
                    "select status from notification_jobs where id = %s", (job_id,)
                ).fetchone()
            return row[0] if row and row[0] == "sent" else None

        wait_for(status, timeout=30)
        assert any("My first notification" in e.read_text() for e in outbox.glob("*.eml"))
    finally:
        if process.poll() is None:
            # Ctrl-C at a terminal signals the whole foreground group, not one process.
            os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
    time.sleep(0.2)  # the reader thread drains the pipe
    rest = printed.rest()
    assert process.returncode == 0, rest[-3000:]
    assert "stopping..." in rest and "Traceback" not in rest
