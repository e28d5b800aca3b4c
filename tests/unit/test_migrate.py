"""`notifier migrate` finds its migrations as package data, and refuses to run without them."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from notifier.cli import main
from notifier.pipeline.render import default_template_dir
from notifier.schema import migrate as migrations

REPO = Path(__file__).resolve().parents[2]


def test_migrations_are_package_data_and_the_supabase_files() -> None:
    packaged = [m.path.name for m in migrations.discover()]
    assert packaged == sorted(p.name for p in (REPO / "supabase" / "migrations").glob("*.sql"))
    assert migrations.MIGRATIONS_DIR.is_relative_to(REPO / "notifier")


def test_package_data_covers_migrations_and_templates() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["notifier"]
    package = REPO / "notifier"
    shipped = {path for pattern in patterns for path in package.glob(pattern)}
    templates = {p for p in default_template_dir().rglob("*") if p.is_file()}
    assert templates and templates <= shipped
    assert {m.path for m in migrations.discover()} <= shipped


def test_migrate_refuses_when_no_migration_file_is_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(migrations, "discover", lambda *_args: [])
    result = CliRunner().invoke(
        main, ["migrate"], env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    )
    assert result.exit_code == 1
    assert "no migration files in" in result.output
    assert "applied" not in result.output
