"""Shared fixtures. Unit tests need nothing; integration tests (tests/integration) get a real
PostgreSQL and Redis started once per session by notifier.localstack."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.loopback import SendGridLoopback, TwilioLoopback

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_binary(found: bool, what: str) -> None:
    """Skip on a laptop without the server binary; under CI a missing binary is a failure."""
    if found:
        return
    if IN_CI:
        pytest.fail(f"{what} is not installed, and CI=true requires it")
    pytest.skip(f"{what} is not installed")


@pytest.fixture
def sendgrid() -> Iterator[SendGridLoopback]:
    """A spec-checking SendGrid on loopback (tests/support/loopback.py)."""
    with SendGridLoopback() as server:
        yield server


@pytest.fixture
def twilio() -> Iterator[TwilioLoopback]:
    """A spec-checking Twilio on loopback (tests/support/loopback.py)."""
    with TwilioLoopback() as server:
        yield server
