"""The WSGI app without servers: routing, methods, and the last line of defence against a
secret in an answer (a driver error quoting a password is masked)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from pydantic import SecretStr

from notifier.config import load_settings
from notifier.operations import web
from notifier.operations.health import Observation
from notifier.operations.probes import Probe
from notifier.redaction import secret_values

SETTINGS = load_settings(
    database_url="postgresql://app:Db-Pass-123@db:5432/app",
    redis_url="redis://:Redis-Pass-456@cache:6379/0",
    email_provider="sendgrid", sendgrid_api_key="SG.Key-789", email_from="n@example.com",
    sms_provider="console",
)  # fmt: skip


def call(
    app: web.WebApp, path: str, method: str = "GET", authorization: str | None = None
) -> tuple[str, dict[str, str], str]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {"PATH_INFO": path, "REQUEST_METHOD": method}
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization
    body = b"".join(app(environ, start_response))
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


def failing_observation(error: str) -> Observation:
    return Observation(
        redis=Probe(True, None, error),
        database=Probe(True, None, error),
        redis_endpoint="cache:6379/0",
        database_endpoint="db:5432/app",
        at=datetime.now(UTC),
    )


def test_a_secret_that_json_would_escape_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    password = 'Qu"ote\\Back-ñ'
    settings = SETTINGS.model_copy(
        update={"database_url": SecretStr(f"postgresql://app:{quote(password)}@db:5432/app")}
    )
    monkeypatch.setattr(web, "observe", lambda s: failing_observation(f"password {password}"))
    _status, _headers, body = call(web.WebApp(settings), "/health/redis")
    assert password not in json.loads(body)["redis"]["error"]
    assert "password ***" in json.loads(body)["redis"]["error"]


TOKEN = "Web-Token-0123456789"


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> web.WebApp:
    monkeypatch.setattr(web, "observe", lambda s: failing_observation("ConnectionRefusedError"))
    return web.WebApp(SETTINGS.model_copy(update={"web_token": SecretStr(TOKEN)}))


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}"])
def test_without_the_token_details_are_refused(
    guarded: web.WebApp, authorization: str | None
) -> None:
    for path in ("/health/redis", "/metrics"):
        status, headers, body = call(guarded, path, authorization=authorization)
        assert status == "401 Unauthorized", path
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert "NOTIFIER_WEB_TOKEN" in json.loads(body)["error"]
    status, _headers, body = call(guarded, "/health", authorization=authorization)
    assert status.startswith("503") and set(json.loads(body)) == {"status", "timestamp"}


def test_with_the_token_everything_is_shown(guarded: web.WebApp) -> None:
    status, _headers, body = call(guarded, "/health", authorization=f"Bearer {TOKEN}")
    assert status.startswith("503") and json.loads(body)["database"]["endpoint"] == "db:5432/app"
    status, _headers, body = call(guarded, "/health/redis", authorization=f"bearer {TOKEN}")
    assert status.startswith("503") and json.loads(body)["status"] == "unavailable"


def test_the_token_is_a_secret_never_shown(guarded: web.WebApp) -> None:
    assert TOKEN in secret_values(SETTINGS.model_copy(update={"web_token": SecretStr(TOKEN)}))
