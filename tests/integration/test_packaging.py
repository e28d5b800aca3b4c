"""A wheel installed outside the checkout carries its migrations and templates.

Builds the wheel from a copy of the sources, installs it into a fresh virtual environment (the
dependencies come from this interpreter's site-packages), and runs the installed commands from
a directory that is not the checkout: migrate, `--check`, and one delivery through the
console provider with the packaged templates.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from notifier.schema import migrate as migrations
from tests.integration.conftest import REPO
from tests.integration.seed import add_recipient


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, **kwargs)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bin/ directory of a virtual environment with only the wheel of notifier in it."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    # A copy keeps stale build/ output of the checkout out of the wheel; symlinks stay links,
    # as in a clone.
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "notifier", source / "notifier", symlinks=True, ignore=ignore)
    shutil.copytree(REPO / "supabase", source / "supabase", symlinks=True, ignore=ignore)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(root / "dist"),
          str(source)])  # fmt: skip
    wheel = next((root / "dist").glob("notifier-*.whl"))
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
    # --ignore-installed: a notifier in the parent site-packages (an editable checkout) must not
    # count as already installed.
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
          "--ignore-installed",
          str(wheel)])  # fmt: skip
    yield venv / "bin"


@pytest.fixture
def outside_env(installed: Path, tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NOTIFIER_", "SENDGRID_", "TWILIO_", "PYTHON"))
    }
    env["PATH"] = str(installed) + os.pathsep + env.get("PATH", "")
    return env


def test_the_installed_package_is_the_wheel(installed: Path, outside_env: dict[str, str],
                                            tmp_path: Path) -> None:  # fmt: skip
    done = _run([str(installed / "python"), "-c", "import notifier; print(notifier.__file__)"],
                env=outside_env, cwd=tmp_path)  # fmt: skip
    assert done.stdout.startswith(str(installed.parent)), done.stdout


def test_wheel_migrates_an_empty_database_and_checks_clean(
    installed: Path, outside_env: dict[str, str], empty_database_url: str, tmp_path: Path
) -> None:
    env = outside_env | {"DATABASE_URL": empty_database_url}
    done = _run([str(installed / "notifier"), "migrate"], env=env, cwd=tmp_path)
    assert f"{len(migrations.discover())} migration(s) applied" in done.stdout
    assert len(migrations.discover()) >= 8
    check = _run([str(installed / "notifier"), "migrate", "--check"], env=env, cwd=tmp_path)
    assert "schema OK" in check.stdout


def test_wheel_delivers_with_its_packaged_templates(
    installed: Path,
    outside_env: dict[str, str],
    database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as db:
        ids = add_recipient(db)
        db.execute(
            "select enqueue_notification_job(%s, %s, null, 'immediate', 'normal', 'email', %s, 0)",
            (ids["recipient"], ids["group"], Jsonb({"subject": "Hi", "body": "From a wheel"})),
        )
    env = outside_env | {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "NOTIFIER_EMAIL_PROVIDER": "console",
        "NOTIFIER_SMS_PROVIDER": "console",
        "NOTIFIER_OUTBOX_DIR": str(tmp_path / "outbox"),
    }
    _run([str(installed / "notifier"), "poller", "--burst"], env=env, cwd=tmp_path)
    _run([str(installed / "python"), "-m", "rq.cli", "worker", "-c", "notifier.rq_settings",
          "-w", "rq.worker.SimpleWorker", "--burst"], env=env, cwd=tmp_path)  # fmt: skip
    with psycopg.connect(database_url, row_factory=dict_row) as db:
        row = db.execute("select status, failure_reason from notification_jobs").fetchone()
    assert row is not None and row["status"] == "sent", row
    (email,) = (tmp_path / "outbox").glob("*.eml")
    assert "From a wheel" in email.read_text()
