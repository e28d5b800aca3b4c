"""Configuration honesty: every bad value is one line naming the variable, never a traceback,
never silently ignored, and every setting is read by the code it configures."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from notifier.config import Settings, known_names, load_settings
from notifier.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "notifier"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("NOTIFIER_", "SENDGRID_", "TWILIO_", "DATABASE_", "REDIS_", "EMAIL_")):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REDIS_URL", "garbage"),
        ("REDIS_URL", "redis://:pa:ss@host:x/0"),
        ("DATABASE_URL", "garbage"),
        ("DATABASE_URL", "postgresql://app:50%off@db/app"),  # unencoded %
        ("DATABASE_URL", "postgresql://app:p@ssword@db/app"),  # unencoded @
        ("DATABASE_URL", "postgresql://app:a/bcdefgh@db/app"),  # unencoded /
        ("NOTIFIER_WEB_HOST", "256.1.1.1"),
        ("NOTIFIER_WEB_HOST", "bad host"),
        ("NOTIFIER_POLL_INTERVAL", "inf"),
        ("NOTIFIER_REAPER_INTERVAL", "inf"),
        ("NOTIFIER_DIGEST_INTERVAL", "nan"),
        ("NOTIFIER_PROVIDER_TIMEOUT", "nan"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert message.startswith(f"{variable} is malformed"), message
    assert "\n" not in message


@pytest.mark.parametrize(
    "url", ["postgresql://app:s3cr%et@db/app", "postgresql://app:hunt@r2x@db/app"]
)
def test_an_unparseable_database_url_never_quotes_its_password(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    for fragment in ("s3cr", "cr%et", "%et", "hunt", "r2x"):
        assert fragment not in str(refused.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "postgresql://app:p%40ss@db:5432/app"),
        ("DATABASE_URL", "host=db dbname=app password=secret"),
        ("DATABASE_URL", "postgresql://app@h1:5432,h2:5433/app"),
        ("DATABASE_URL", "postgresql:///app?host=/var/run/postgresql"),
        ("REDIS_URL", "unix:///tmp/redis.sock"),
        ("NOTIFIER_WEB_HOST", "::"),
        ("NOTIFIER_WEB_HOST", "localhost"),
        ("NOTIFIER_WEB_HOST", "web-1.internal"),
    ],
)
def test_good_values_pass(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    load_settings()


def test_a_misspelled_setting_is_refused_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFIER_POLL_INTERVALL", "1")
    with pytest.raises(
        ConfigError, match=r"^NOTIFIER_POLL_INTERVALL is not a notifier setting; did you mean "
        r"NOTIFIER_POLL_INTERVAL\?$"
    ):
        load_settings()


def test_the_known_names_come_from_the_settings_fields() -> None:
    """Settings added later are known at once: nothing to keep in step by hand."""
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        assert alias is not None
        assert alias.choices[0] in known_names()  # type: ignore[union-attr]


def test_the_pool_size_bounds_the_workers_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    from notifier.pipeline import runtime
    from notifier.store import postgres

    sizes: list[int] = []

    class Recorder:
        def __init__(self, url: str, *, max_size: int, prepare: bool | None) -> None:
            sizes.append(max_size)

    monkeypatch.setattr(postgres, "PostgresCaller", Recorder)
    base = {
        "database_url": "postgresql://db:5432/app", "redis_url": "redis://127.0.0.1:1/0",
        "email_provider": "console", "sms_provider": "console",
    }  # fmt: skip
    runtime.build_deliverer(load_settings(**base, db_pool_size=4, send_concurrency=64))
    runtime.build_deliverer(load_settings(**base, db_pool_size=20, send_concurrency=2))
    assert sizes == [5, 3]


def test_the_pm2_directory_variable_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_BIN", "/opt/notifier/.venv/bin")
    load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("REDIS_URL", "garbage", "notifier: REDIS_URL is malformed"),
        ("DATABASE_URL", "garbage", "notifier: DATABASE_URL is malformed"),
        ("NOTIFIER_WEB_HOST", "256.1.1.1", "notifier: NOTIFIER_WEB_HOST is malformed"),
    ],
)
def test_commands_exit_2_with_one_line(variable: str, value: str, expected: str) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    environment.update({variable: value, "PYTHONPATH": str(ROOT)})
    done = subprocess.run(
        [sys.executable, "-m", "notifier.cli", "web"],
        env=environment, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith(expected), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_prepared_statements_setting_reaches_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from notifier.pipeline import runtime
    from notifier.store import postgres

    seen: dict[str, object] = {}

    class Recorder:
        def __init__(self, url: str, *, max_size: int, prepare: bool | None) -> None:
            seen.update(max_size=max_size, prepare=prepare)

    monkeypatch.setattr(postgres, "PostgresCaller", Recorder)
    monkeypatch.setenv("DATABASE_URL", "postgresql://db:5432/app")
    monkeypatch.setenv("NOTIFIER_DB_PREPARED_STATEMENTS", "false")
    runtime.build_store(load_settings(), pool_size=3)
    assert seen == {"max_size": 3, "prepare": False}


def test_the_poller_enqueues_with_the_computed_rq_job_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from notifier.pipeline import poller as poller_module

    settings = load_settings(lease_seconds=900)
    assert settings.rq_job_timeout != settings.lease_seconds
    timeouts: list[int] = []
    monkeypatch.setattr(
        poller_module, "enqueue_claims", lambda r, claims, size, timeout: timeouts.append(timeout)
    )
    monkeypatch.setattr(poller_module, "queued_rq_jobs", lambda r: 0)

    class Store:
        def claim(self, *args: object) -> list[object]:
            return [object()]

    policy = poller_module.PollerPolicy(
        poll_interval=1, reaper_interval=1, claim_batch_size=10, rq_job_size=5,
        max_in_flight=100, lease_seconds=900, unknown_outcome="retry",
        rq_job_timeout=settings.rq_job_timeout,
    )  # fmt: skip
    poller = poller_module.Poller(Store(), None, "postgresql://db/app", policy)  # type: ignore[arg-type]
    poller.claim_once()
    assert timeouts == [settings.rq_job_timeout]


# --- every setting is read by the code it configures -------------------------------------


def _attributes_read(tree: ast.AST) -> set[str]:
    return {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}


def test_every_setting_is_read_outside_the_settings_module() -> None:
    """A field nobody reads is a documented knob that does nothing (as
    NOTIFIER_DB_PREPARED_STATEMENTS was). A field may be read through a `Settings` property or
    method (`resolved_email_provider`) as long as that one is read outside."""
    outside: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if path.name != "config.py" or path.parent != PACKAGE:
            outside |= _attributes_read(ast.parse(path.read_text()))
    config = ast.parse((PACKAGE / "config.py").read_text())
    settings_class = next(
        n for n in config.body if isinstance(n, ast.ClassDef) and n.name == "Settings"
    )
    via_members: set[str] = set()
    for member in settings_class.body:
        if isinstance(member, ast.FunctionDef) and member.name in outside:
            via_members |= _attributes_read(member)
    unread = sorted(set(Settings.model_fields) - outside - via_members)
    assert unread == [], f"settings no code reads: {unread}"


def test_the_worker_refuses_a_missing_template_dir(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("NOTIFIER_TEMPLATE_DIR", str(tmp_path / "nonexistent"))
    assert "NOTIFIER_TEMPLATE_DIR" in _worker_refusal(monkeypatch, capsys)


def test_the_worker_refuses_an_unwritable_outbox(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("NOTIFIER_OUTBOX_DIR", str(blocker / "outbox"))
    assert "NOTIFIER_OUTBOX_DIR" in _worker_refusal(monkeypatch, capsys)


def test_the_worker_refuses_a_malformed_database_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "DATABASE_URL is malformed" in _worker_refusal(
        monkeypatch, capsys, database_url="postgresql://app:p@ss@db/app"
    )


def _worker_refusal(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    database_url: str = "postgresql://db/app",
) -> str:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("NOTIFIER_EMAIL_PROVIDER", "console")
    monkeypatch.setenv("NOTIFIER_SMS_PROVIDER", "console")
    monkeypatch.delitem(sys.modules, "notifier.rq_settings", raising=False)
    with pytest.raises(SystemExit) as stopped:
        importlib.import_module("notifier.rq_settings")
    monkeypatch.delitem(sys.modules, "notifier.rq_settings", raising=False)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err
