"""`notifier dev`, the README's "run" command, works from a clean directory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from notifier.devstack.demo import command
from tests.integration.conftest import REPO


def test_dev_delivers_the_demo_and_prints_the_table(
    tmp_path: Path, pg_server: object, redis_server: object
) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NOTIFIER_", "SENDGRID_", "TWILIO_", "DATABASE_URL", "REDIS_URL"))
    }
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        command("notifier", "dev", "--seconds", "90", "--outbox", str(tmp_path / "outbox")),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout[done.stdout.rindex("id  ") :]
    assert table.count(" sent ") == 4
    assert "skipped" in table and "recipient is muted" in table
    assert "failed" in table and "rejected the address" in table
    emails = sorted((tmp_path / "outbox").glob("*.eml"))
    assert len(emails) == 3
    assert any("Happy birthday &lt;Lily&gt;" in e.read_text() for e in emails), "HTML escaped"
    assert len(list((tmp_path / "outbox").glob("*.txt"))) == 1
