"""Shared fixtures. Unit tests need nothing; integration tests (tests/integration) get a real
PostgreSQL and Redis started once per session by notifier.localstack."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_binary(found: bool, what: str) -> None:
    """Skip on a laptop without the server binary; under CI a missing binary is a failure."""
    if found:
        return
    if IN_CI:
        pytest.fail(f"{what} is not installed, and CI=true requires it")
    pytest.skip(f"{what} is not installed")
