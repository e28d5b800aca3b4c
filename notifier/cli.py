"""The `notifier` command. Each subcommand loads the settings first, so a missing variable
stops it with one line that names it (exit code 2)."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from notifier import __version__
from notifier.config import Settings, load_settings, mask_url
from notifier.errors import ConfigError, NotifierError
from notifier.log import configure


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"notifier: {message}", err=True)
    sys.exit(code)


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as error:
        _fail(str(error))
    configure(settings.log_format, settings.log_level)
    return settings


def _database_url(settings: Settings) -> str:
    try:
        return settings.require_database_url()
    except ConfigError as error:
        _fail(str(error))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="notifier")
def main() -> None:
    """notifier: deliver notification jobs from Postgres through RQ workers.

    \b
    Processes:  notifier poller | rq worker -c notifier.rq_settings | notifier dev
    Schema:     notifier migrate [--dry-run]
    Settings come from environment variables; see the README's configuration table.
    """


@main.command()
@click.option("--dry-run", is_flag=True, help="Print the migrations that would be applied.")
def migrate(dry_run: bool) -> None:
    """Apply supabase/migrations to DATABASE_URL (idempotent).

    \b
    Examples:
      DATABASE_URL=postgresql://postgres@localhost/app notifier migrate
      notifier migrate --dry-run
    """
    from notifier import migrations

    url = _database_url(_settings())
    try:
        if dry_run:
            todo = migrations.pending(url)
            for migration in todo:
                click.echo(f"would apply {migration.path.name}")
            click.echo(f"{len(todo)} migration(s) pending on {mask_url(url)}")
            return
        applied = migrations.apply(url, on_applied=lambda m: click.echo(f"applied {m.path.name}"))
    except NotifierError as error:
        _fail(str(error), 1)
    click.echo(f"{len(applied)} migration(s) applied to {mask_url(url)}")


@main.command()
@click.option("--burst", is_flag=True, help="Enqueue everything due now, then exit.")
def poller(burst: bool) -> None:
    """Claim due jobs from Postgres and put them on the RQ queues.

    \b
    Runs the lease reaper too. Any number of pollers may run at once.
    Examples:
      notifier poller
      notifier poller --burst      # drain what is due now, then exit
    """
    from notifier.poller import Poller, PollerPolicy
    from notifier.queues import redis_connection
    from notifier.runtime import build_store

    settings = _settings()
    try:
        redis_url = settings.require_redis_url()
        database_url = settings.require_database_url()
    except ConfigError as error:
        _fail(str(error))
    store = build_store(settings, pool_size=2)
    policy = PollerPolicy(
        poll_interval=settings.poll_interval,
        reaper_interval=settings.reaper_interval,
        claim_batch_size=settings.claim_batch_size,
        rq_job_size=settings.rq_job_size,
        max_in_flight=settings.max_in_flight,
        lease_seconds=settings.lease_seconds,
        unknown_outcome=settings.unknown_outcome,
        rq_job_timeout=settings.rq_job_timeout,
    )
    runner = Poller(store, redis_connection(redis_url), database_url, policy)
    runner.install_signal_handlers()
    try:
        runner.run(burst=burst)
    finally:
        store.close()


@main.command()
@click.option("--burst", is_flag=True, help="Run one digest pass, then exit.")
def scheduler(burst: bool) -> None:
    """Create digest jobs for due digest schedules, every NOTIFIER_DIGEST_INTERVAL seconds.

    \b
    Each pass is the SQL function create_digest_jobs(); pg_cron can call it instead.
    Any number of schedulers may run at once (each period gets one digest).
    Examples:
      notifier scheduler
      notifier scheduler --burst   # one pass now, then exit
    """
    from notifier.digests import DigestScheduler
    from notifier.runtime import build_store

    settings = _settings()
    _database_url(settings)
    store = build_store(settings, pool_size=1)
    runner = DigestScheduler(store, settings.digest_interval)
    runner.install_signal_handlers()
    try:
        runner.run(burst=burst)
    except NotifierError as error:
        _fail(str(error), 1)
    finally:
        store.close()


@main.command()
@click.option("--seconds", type=float, default=None, help="Stop after this long (default: Ctrl-C).")
@click.option(
    "--outbox",
    type=click.Path(file_okay=False),
    default="outbox",
    show_default=True,
    help="Where the console provider writes .eml/.txt files.",
)
def dev(seconds: float | None, outbox: str) -> None:
    """Run everything locally: throwaway Postgres and Redis, demo data, console delivery.

    \b
    Needs no credentials. Ctrl-C stops everything cleanly.
    Example:
      notifier dev --seconds 20
    """
    from notifier.devstack import run_dev

    try:
        code = run_dev(seconds=seconds, outbox=outbox)
    except NotifierError as error:
        _fail(str(error), 1)
    sys.exit(code)


if __name__ == "__main__":
    main()
