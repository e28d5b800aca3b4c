"""The Supabase REST backend without servers: backend selection, PostgREST's answers as rows,
its errors as notifier's, and which calls are retried (httpx's MockTransport plays the API)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import httpx
import pytest
from postgrest.exceptions import APIError

from notifier.config import load_settings
from notifier.errors import (
    ConfigError,
    StoreAuthError,
    StoreError,
    StoreFunctionMissingError,
    StoreUnavailableError,
)
from notifier.store import backend as backend_module
from notifier.store.rest import RestCaller, api_error, rows

URL = "https://abcd.supabase.co"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("NOTIFIER_", "DATABASE_", "SUPABASE_")):
            monkeypatch.delenv(name)
    monkeypatch.setattr(backend_module, "_announced", False)


def test_the_backend_defaults_as_the_settings_say() -> None:
    supabase = {"supabase_url": URL, "supabase_service_role_key": "key"}
    assert load_settings().resolved_backend is None
    assert load_settings(**supabase).resolved_backend == "supabase"
    assert load_settings(database_url="postgresql://db/app").resolved_backend == "postgres"
    both = load_settings(database_url="postgresql://db/app", **supabase)
    assert both.resolved_backend == "postgres"
    assert load_settings(backend="supabase", database_url="postgresql://db/app", **supabase)\
        .resolved_backend == "supabase"  # fmt: skip


def test_no_backend_names_all_three_variables() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings().require_backend()
    for name in ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"):
        assert name in str(caught.value)
    with pytest.raises(ConfigError, match="SUPABASE_SERVICE_ROLE_KEY not set"):
        load_settings(backend="supabase", supabase_url=URL).require_backend()


def test_the_new_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_BACKEND", "mysql")
    with pytest.raises(ConfigError, match=r"^NOTIFIER_BACKEND is malformed"):
        load_settings()
    monkeypatch.setenv("NOTIFIER_BACKEND", "supabase")
    monkeypatch.setenv("NOTIFIER_DB_TIMEOUT", "0")
    with pytest.raises(ConfigError, match=r"^NOTIFIER_DB_TIMEOUT is malformed"):
        load_settings()


def test_both_configured_says_once_that_postgres_wins(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(
        database_url="postgresql://db/app", supabase_url=URL, supabase_service_role_key="k"
    )
    with caplog.at_level(logging.INFO, logger="notifier.store"):
        assert backend_module.backend(settings) == "postgres"
        assert backend_module.backend(settings) == "postgres"
    lines = [r for r in caplog.records if r.getMessage() == "backend_chosen"]
    assert len(lines) == 1


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([{"id": 1}, {"id": 2}], [{"id": 1}, {"id": 2}]),  # set or table
        ([], []),  # an empty set, or void (supabase-py reads 204 as [])
        (["a", "b"], [{"fn": "a"}, {"fn": "b"}]),  # setof scalar
        ({"paused": True}, [{"paused": True}]),  # one composite
        (7, [{"fn": 7}]),  # scalar
        (None, [{"fn": None}]),  # scalar null
    ],
)
def test_postgrest_answers_read_as_psycopg_rows(data: object, expected: object) -> None:
    assert rows("fn", data) == expected


def test_errors_map_onto_notifiers_own() -> None:
    def error(status: int | None, **body: object) -> StoreError:
        return api_error("claim_notification_jobs", APIError(dict(body)), status)

    assert isinstance(error(401, message="Invalid API key"), StoreAuthError)
    assert isinstance(error(403, code="42501", message="permission denied"), StoreAuthError)
    missing = error(404, code="PGRST202", message="Could not find the function")
    assert isinstance(missing, StoreFunctionMissingError)
    assert "20261124000400_job_functions.sql" in str(missing)
    assert "reload schema" in str(missing)
    for transient in (
        error(503, code="PGRST001", message="Database client error"),
        error(502, message="Bad gateway"),
        error(500, code="57014", message="canceling statement due to statement timeout"),
        error(503, code="08006", message="connection failure"),
    ):
        assert isinstance(transient, StoreUnavailableError)
    own = error(400, code="P0001", message="job 1 is not pending")
    assert type(own) is StoreError and str(own) == "job 1 is not pending"
    assert own.code == "P0001"


def caller_answering(answers: list[httpx.Response | Exception], seen: list[str]) -> RestCaller:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        assert request.headers["apikey"] == "service-key"
        assert request.headers["authorization"] == "Bearer service-key"
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return RestCaller(URL, "service-key", timeout=1, transport=httpx.MockTransport(handle),
                      read_retry_pauses=(0.0, 0.0))  # fmt: skip


UNAVAILABLE: Callable[[], httpx.Response] = lambda: httpx.Response(  # noqa: E731
    503, json={"code": "PGRST001", "message": "Database client error", "details": None,
               "hint": None},
)  # fmt: skip


def test_a_read_is_retried_after_a_transient_error() -> None:
    seen: list[str] = []
    caller = caller_answering(
        [UNAVAILABLE(), httpx.ConnectError("refused"), httpx.Response(200, json=False)], seen
    )
    assert caller.call("notifier_handed_back", {}) == [{"notifier_handed_back": False}]
    assert seen == ["/rest/v1/rpc/notifier_handed_back"] * 3


def test_a_state_change_is_never_repeated() -> None:
    seen: list[str] = []
    caller = caller_answering([UNAVAILABLE(), httpx.Response(200, json=[])], seen)
    with pytest.raises(StoreUnavailableError, match="503"):
        caller.call("claim_notification_jobs", {"p_limit": 1})
    assert seen == ["/rest/v1/rpc/claim_notification_jobs"]


def test_a_timeout_is_transient_and_names_the_setting() -> None:
    caller = caller_answering([httpx.ReadTimeout("slow")], [])
    with pytest.raises(StoreUnavailableError, match="NOTIFIER_DB_TIMEOUT"):
        caller.call("complete_notification_job", {})


def test_arguments_go_as_one_json_object_of_named_arguments() -> None:
    bodies: list[object] = []

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json="a3c1e2f0-0000-4000-8000-000000000000")

    caller = RestCaller(URL, "k", timeout=1, transport=httpx.MockTransport(handle))
    caller.call("enqueue_notification_job", {"p_recipient_id": "r", "p_content": {"body": "x"}})
    assert bodies == [{"p_recipient_id": "r", "p_content": {"body": "x"}}]
