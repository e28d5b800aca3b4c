"""`notifier export` writes every tenant's personal data: never through a planted symlink,
never over a device file, and readable by its owner only."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import psycopg

from tests.integration import seed
from tests.integration.test_ops import insert_jobs, notifier


def test_the_export_file_is_private_and_a_planted_part_symlink_is_ignored(
    db: psycopg.Connection[Any], base_env: dict[str, str], tmp_path: Path
) -> None:
    insert_jobs(db, seed.add_recipient(db)["recipient"], 3, status="sent")
    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "jobs.jsonl"
    (tmp_path / "jobs.jsonl.part").symlink_to(victim)  # what a hostile user could plant
    done = notifier(base_env, "export", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "precious"
    assert len(out.read_text().splitlines()) == 3
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == ["jobs.jsonl.part"]


def test_a_symlink_or_device_target_is_refused(
    db: psycopg.Connection[Any], base_env: dict[str, str], tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "link.jsonl"
    link.symlink_to(victim)
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    for target in (link, Path("/dev/null"), fifo):
        done = notifier(base_env, "export", "--out", str(target))
        assert done.returncode == 1, (target, done.stderr)
        assert "is not a regular file" in done.stderr, done.stderr
    assert victim.read_text() == "precious" and link.is_symlink()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
