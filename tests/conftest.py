"""Shared fixtures and the test tiers.

tests/unit needs no server (fakeredis at most); tests/integration gets a real PostgreSQL and
Redis started once per session by notifier.devstack.servers. Each test is marked with its tier
by folder, so `pytest -m unit` or `-m integration` picks one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.loopback import SendGridLoopback, TwilioLoopback

IN_CI = os.environ.get("CI", "").lower() == "true"
TIERS = ("unit", "integration", "chaos")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with the tier its folder names (tests/<tier>/...)."""
    for item in items:
        parts = item.path.parts
        tier = next((part for part in TIERS if part in parts[-3:-1]), None)
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))


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
