"""The WSGI app without servers: routing, methods, and the last line of defence against a
secret in an answer (a driver error quoting a connection string or a key is masked), without
becoming an oracle (no request path is echoed; a short password is never substituted)."""

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
    email_provider="sendgrid", sendgrid_api_key="SG.Key-789-abcdefghij", email_from="n@example.com",
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
    leaky = "AuthenticationError: AUTH refused; tried redis://:Redis-Pass-456@cache"
    observation = Observation(
        redis=Probe(True, None, leaky),
        database=Probe(
            True, None, "OperationalError: password=Db-Pass-123 and key SG.Key-789-abcdefghij"
        ),
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
        assert "redis://:***@cache" in body
        assert int(headers["Content-Length"]) == len(body.encode())


def test_unknown_paths_and_methods() -> None:
    app = web.WebApp(SETTINGS)
    status, _headers, body = call(app, "/nope")
    assert status == "404 Not Found" and json.loads(body)["error"] == "no such path"
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
    monkeypatch.setattr(
        web, "observe", lambda s: failing_observation(f"dsn postgresql://app:{password}@db/app")
    )
    _status, _headers, body = call(web.WebApp(settings), "/health/redis")
    assert password not in json.loads(body)["redis"]["error"]
    assert "postgresql://app:***@db/app" in json.loads(body)["redis"]["error"]


def test_a_guessed_secret_in_the_path_gets_the_same_answer_as_any_path() -> None:
    """`GET /<guess>` must not tell whether the guess is a configured secret."""
    app = web.WebApp(SETTINGS)
    answers = {call(app, f"/{guess}")[2] for guess in ("Db-Pass-123", "Redis-Pass-456", "x")}
    assert answers == {json.dumps({"error": "no such path"})}


def test_a_common_word_password_masks_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    """A password `postgres` once turned the database name in /health into `***`."""
    settings = SETTINGS.model_copy(
        update={"database_url": SecretStr("postgresql://postgres:postgres@db:5432/postgres")}
    )
    observation = Observation(
        redis=Probe(True, None, None),
        database=Probe(True, None, "OperationalError: database postgres is starting up"),
        redis_endpoint="cache:6379/0",
        database_endpoint="db:5432/postgres",
        at=datetime.now(UTC),
    )
    monkeypatch.setattr(web, "observe", lambda s: observation)
    _status, _headers, body = call(web.WebApp(settings), "/health")
    assert "***" not in body
    assert json.loads(body)["database"]["endpoint"] == "db:5432/postgres"


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
