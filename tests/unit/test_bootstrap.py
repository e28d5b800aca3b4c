"""scripts/bootstrap.sh (what `make dev` / `make test` run first) installs once, then is a no-op.

The interpreter is a stand-in that answers the script's questions and records each pip call,
so the test costs milliseconds and never touches a real environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FAKE_PYTHON = """#!/usr/bin/env bash
# Answers like a Python inside a virtual environment at $FAKE_PREFIX; logs pip calls.
case "$*" in
  *"sys.prefix != sys.base_prefix"*) echo 1 ;;
  *"print(sys.prefix)"*) echo "$FAKE_PREFIX" ;;
  *"sys.version"*) echo "3.11.0 (fake)" ;;
  "-m pip install"*) echo "$*" >> "$FAKE_PREFIX/pip.log" ;;
  *) echo "unexpected: $*" >&2; exit 2 ;;
esac
"""


def run_bootstrap(python: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHON": str(python), "FAKE_PREFIX": str(prefix)}
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "bootstrap.sh")],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.skipif(
    shutil.which("redis-server") is None or not list(Path("/usr/lib/postgresql").glob("*/bin")),
    reason="bootstrap would first install the server binaries",
)
def test_second_bootstrap_runs_no_pip_and_takes_under_a_second(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    prefix = tmp_path / "env"
    prefix.mkdir()

    first = run_bootstrap(python, prefix)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == str(python)  # a virtual environment is used as it is
    assert (prefix / "pip.log").read_text().count("-e .[test]") == 1

    started = time.monotonic()
    second = run_bootstrap(python, prefix)
    elapsed = time.monotonic() - started
    assert second.returncode == 0, second.stderr
    assert (prefix / "pip.log").read_text().count("-e .[test]") == 1, "pip ran again"
    assert elapsed < 1.0

    (prefix / ".notifier-bootstrap").write_text("an older pyproject.toml\n")
    third = run_bootstrap(python, prefix)
    assert third.returncode == 0, third.stderr
    assert (prefix / "pip.log").read_text().count("-e .[test]") == 2
