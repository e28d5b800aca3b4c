"""What every `notifier` subcommand shares: loading settings and failing with one line.

A missing or malformed setting exits 2 naming the variable; a failure exits 1. Messages pass
through the `Redactor`, so no configured password, key or token is ever printed.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from notifier.config import Settings, load_settings
from notifier.errors import ConfigError
from notifier.log import configure
from notifier.redaction import Redactor, secret_values


def fail(message: str, code: int = 2, settings: Settings | None = None) -> NoReturn:
    if settings is not None:
        message = Redactor.for_settings(settings)(message)
    click.echo(f"notifier: {message}", err=True)
    sys.exit(code)


def settings_or_exit() -> Settings:
    """The settings, with logging configured from them; exit 2 naming a bad variable."""
    try:
        settings = load_settings()
    except ConfigError as error:
        fail(str(error))
    configure(settings.log_format, settings.log_level, secret_values(settings))
    return settings


def database_url_or_exit(settings: Settings) -> str:
    try:
        return settings.require_database_url()
    except ConfigError as error:
        fail(str(error))


def session_url_or_exit(settings: Settings, command: str, instead: str) -> str:
    """DATABASE_URL for a command that needs a session on the database (migrations, adoption,
    the export's cursor), which the Supabase REST API cannot give: one line saying so, and
    what to do instead, when only SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are set."""
    if settings.database_url is None and settings.resolved_backend == "supabase":
        fail(
            f"notifier {command} needs DATABASE_URL (a session on the database, which the "
            f"Supabase REST API cannot give): {instead}"
        )
    return database_url_or_exit(settings)
