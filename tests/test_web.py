"""The WSGI app without servers: routing, methods, and the last line of defence against a
secret in an answer (a driver error quoting a password is masked)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from notifier import web
from notifier.config import load_settings
from notifier.health import Observation
from notifier.probes import Probe

SETTINGS = load_settings(
    database_url="postgresql://app:Db-Pass-123@db:5432/app",
    redis_url="redis://:Redis-Pass-456@cache:6379/0",
    email_provider="sendgrid", sendgrid_api_key="SG.Key-789", email_from="n@example.com",
    sms_provider="console",
)  # fmt: skip


def call(app: web.WebApp, path: str, method: str = "GET") -> tuple[str, dict[str, str], str]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": method}, start_response))
    return seen["status"], seen["headers"], body.decode()


def test_an_error_quoting_a_secret_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    leaky = "AuthenticationError: AUTH Redis-Pass-456 refused; tried redis://:Redis-Pass-456@cache"
    observation = Observation(
        redis=Probe(True, None, leaky),
        database=Probe(True, None, "OperationalError: password Db-Pass-123 and key SG.Key-789"),
        redis_endpoint="cache:6379/0",
        database_endpoint="db:5432/app",
        at=datetime.now(UTC),
    )
    monkeypatch.setattr(web, "observe", lambda settings: observation)
    app = web.WebApp(SETTINGS)
    for path in ("/health", "/health/redis"):
        status, headers, body = call(app, path)
        assert status.startswith("503")
        for secret in ("Redis-Pass-456", "Db-Pass-123", "SG.Key-789"):
            assert secret not in body
        assert "AUTH *** refused" in body
        assert int(headers["Content-Length"]) == len(body.encode())


def test_unknown_paths_and_methods() -> None:
    app = web.WebApp(SETTINGS)
    status, _headers, body = call(app, "/nope")
    assert status == "404 Not Found" and json.loads(body)["error"] == "no such path: /nope"
    status, headers, _body = call(app, "/health", method="POST")
    assert status == "405 Method Not Allowed" and headers["Allow"] == "GET, HEAD"
    status, _headers, body = call(app, "/")
    assert status == "200 OK" and "/metrics" in json.loads(body)["paths"]
