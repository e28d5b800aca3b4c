"""The `notifier` command. Each subcommand loads the settings first, so a missing variable
stops it with one line that names it (exit code 2)."""

from __future__ import annotations

import sys

import click

from notifier import __version__
from notifier.cli_common import fail as _fail
from notifier.cli_common import session_url_or_exit as _session_url
from notifier.cli_common import settings_or_exit as _settings
from notifier.config import mask_url
from notifier.errors import ConfigError, NotifierError, StoreError

# What each command that needs a session says to do instead on the REST backend.
_SESSION = "set it to the database's direct or session-pooler (port 5432) connection string"
_MIGRATE_INSTEAD = "apply supabase/migrations with `supabase db push`, or " + _SESSION


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="notifier")
def main() -> None:
    """notifier: deliver notification jobs from Postgres through RQ workers.

    \b
    Processes:  notifier poller | rq worker -c notifier.rq_settings | notifier dev
    Schema:     notifier migrate [--dry-run | --check]
    Switching:  notifier adopt [--dry-run] | notifier handback  (docs/migrating.md)
    Operations: notifier web | status | pause | resume | retry | cancel | export | cleanup
    Settings come from environment variables; see the README's configuration table.
    """


@main.command()
@click.option("--dry-run", is_flag=True, help="Print the migrations that would be applied.")
@click.option(
    "--check",
    is_flag=True,
    help="Verify the installed schema (tables, functions, grants, RLS, policies); exit 1 if not.",
)
def migrate(dry_run: bool, check: bool) -> None:
    """Apply the migrations (supabase/migrations, shipped in the package) to DATABASE_URL.

    Idempotent: each file runs once. Exit 1 if no migration file is found.

    \b
    Examples:
      DATABASE_URL=postgresql://postgres@localhost/app notifier migrate
      notifier migrate --dry-run
      notifier migrate --check     # exit 0 "schema OK", or 1 and the problems
    """
    import psycopg

    from notifier.schema import migrate as migrations

    url = _session_url(_settings(), "migrate", _MIGRATE_INSTEAD)
    if not migrations.discover():
        _fail(
            f"no migration files in {migrations.MIGRATIONS_DIR}: this installation is incomplete "
            "(reinstall notifier)",
            1,
        )
    if check:
        from notifier.schema.check import check as check_schema

        try:
            problems = check_schema(url)
        except psycopg.Error as error:
            _fail(f"could not read the schema: {error}", 1)
        for problem in problems:
            click.echo(f"- {problem}")
        if problems:
            _fail(f"{len(problems)} schema problem(s) on {mask_url(url)}; see above", 1)
        click.echo(f"schema OK on {mask_url(url)}")
        return
    try:
        if dry_run:
            todo = migrations.pending(url)
            for migration in todo:
                click.echo(f"would apply {migration.path.name}")
            click.echo(f"{len(todo)} migration(s) pending on {mask_url(url)}")
            return
        applied = migrations.apply(url, on_applied=lambda m: click.echo(f"applied {m.path.name}"))
        with psycopg.connect(url) as conn:
            changed = migrations.changed_since_applied(conn)
    except NotifierError as error:
        _fail(str(error), 1)
    for migration in changed:
        click.echo(f"warning: {migration.path.name} changed after it was applied", err=True)
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
    import threading

    from notifier.pipeline.poller import stop_on_signals

    stopping = stop_on_signals(threading.Event())  # first: a SIGTERM while starting is graceful
    from notifier.pipeline.runtime import build_poller

    settings = _settings()
    try:
        runner = build_poller(settings, stopping=stopping)
    except ConfigError as error:
        _fail(str(error))
    except StoreError as error:  # a refused key, missing migrations
        _fail(str(error), 1, settings)
    try:
        runner.run(burst=burst)
    finally:
        runner.close()


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
    from notifier.digests.scheduler import DigestScheduler
    from notifier.pipeline.runtime import build_store

    settings = _settings()
    try:
        store = build_store(settings, pool_size=1, check=True)
    except ConfigError as error:
        _fail(str(error))
    except StoreError as error:  # a refused key, missing migrations
        _fail(str(error), 1, settings)
    runner = DigestScheduler(store, settings.digest_interval)
    runner.install_signal_handlers()
    try:
        runner.run(burst=burst)
    except NotifierError as error:
        _fail(str(error), 1)
    finally:
        store.close()


@main.command()
@click.option(
    "--seconds",
    type=float,
    default=None,
    help="Stop this many seconds after the start (default: run until Ctrl-C).",
)
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
    Needs no credentials. After the demo it prints a psql line and an enqueue call to try,
    and keeps running until Ctrl-C (or --seconds), which stops everything cleanly.
    Examples:
      notifier dev
      notifier dev --seconds 60
    """
    from notifier.devstack.demo import run_dev

    try:
        code = run_dev(seconds=seconds, outbox=outbox)
    except NotifierError as error:
        _fail(str(error), 1)
    sys.exit(code)


@main.command()
@click.option(
    "--bullmq-url", default=None, help="Redis of the old BullMQ queue [default: REDIS_URL]"
)
@click.option("--queue", default="notification-queue", show_default=True, help="BullMQ queue name.")
@click.option("--prefix", default="bull", show_default=True, help="BullMQ key prefix.")
@click.option(
    "--bullmq-dir",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="The old worker's directory (with node_modules/bullmq): remove jobs with BullMQ's own "
    "Queue.remove through node [default: the current directory, if it has bullmq].",
)
@click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing.")
def adopt(
    bullmq_url: str | None, queue: str, prefix: str, bullmq_dir: str | None, dry_run: bool
) -> None:
    """Take over the jobs the original worker (BullMQ) left in flight. Stop it first.

    \b
    Settles every `processing` job notifier never claimed by what BullMQ knows of it:
    completed → sent/failed; failed → failed; waiting/prioritized/delayed with no attempt
    made → removed from the old queue, then pending; active, or waiting after an attempt →
    removed, then like no trace: sent if a delivered log row exists, else pending (outcome
    unknown: it may arrive twice). Idempotent. See docs/migrating.md.
    Examples:
      pm2 stop notification-worker
      notifier adopt --dry-run
      notifier adopt --bullmq-dir /srv/notification-worker
    """
    import shutil
    from pathlib import Path

    import psycopg
    from redis import Redis
    from redis.exceptions import RedisError

    from notifier.adoption import adopt as adoption
    from notifier.adoption import bullmq
    from notifier.pipeline.runtime import build_store

    settings = _settings()
    _session_url(settings, "adopt", _SESSION + " for this command")
    try:
        url = bullmq_url or settings.require_redis_url()
    except ConfigError as error:
        _fail(f"{error} (or pass --bullmq-url)")
    directory = Path(bullmq_dir or ".").resolve()
    found = bullmq.bullmq_version_in(directory)
    if bullmq_dir and found is None:
        if shutil.which("node") is None:
            _fail("node is not installed; install Node.js to remove jobs with BullMQ's own code")
        _fail(
            f"node could not load bullmq and ioredis from {directory}; pass the old worker's "
            "directory (the one with node_modules/bullmq), or run `npm install bullmq` there"
        )
    redis = Redis.from_url(url, decode_responses=True)
    old_queue = bullmq.OldQueue(redis, queue, prefix)
    remover: bullmq.Remover = (
        bullmq.NodeRemover(found[0], directory, found[1], url, old_queue)
        if found
        else bullmq.LuaRemover(old_queue)
    )
    # A session on DATABASE_URL, even where NOTIFIER_BACKEND=supabase serves the other processes.
    store = build_store(settings.model_copy(update={"backend": "postgres"}), pool_size=1)
    try:
        report = adoption.adopt(store, old_queue, remover, dry_run=dry_run)
        click.echo(report.render())
        if report.applied and not report.problems and store.handed_back():
            store.set_paused(False)
            click.echo("claims resumed (they were paused by notifier handback)")
    except (adoption.AdoptionError, bullmq.BullMQError) as error:
        _fail(bullmq.masked(str(error), url), 1, settings)
    except RedisError as error:
        _fail(bullmq.masked(f"the old queue's Redis ({url}) failed: {error}", url), 1, settings)
    except psycopg.Error as error:
        _fail(bullmq.masked(f"the database failed: {error}", url), 1, settings)
    finally:
        store.close()
        redis.close()
    if report.problems:
        sys.exit(1)


@main.command()
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for the attempts notifier workers are making.",
)
def handback(timeout: float) -> None:
    """Give the queue back to the original worker (the rollback of `notifier adopt`).

    \b
    Pauses claims, returns queued (and digest) jobs to statuses the original worker knows,
    settles expired leases as the reaper does, and waits for attempts in flight. Afterwards
    no job has a status outside pending, processing, sent, failed, skipped, cancelled.
    Exit 1 if attempts are still in flight at the timeout. Idempotent.
    Example:
      notifier handback
      pm2 stop notifier-poller notifier-worker notifier-scheduler
      pm2 start notification-worker
    """
    import psycopg

    from notifier.adoption.handback import hand_back
    from notifier.pipeline.runtime import build_store

    settings = _settings()
    _session_url(settings, "handback", _SESSION + " for this command")
    # A session on DATABASE_URL, even where NOTIFIER_BACKEND=supabase serves the other processes.
    store = build_store(settings.model_copy(update={"backend": "postgres"}), pool_size=1)
    try:
        report = hand_back(store, unknown_outcome=settings.unknown_outcome, timeout=timeout)
    except psycopg.Error as error:
        _fail(f"the database failed: {error}", 1)
    finally:
        store.close()
    click.echo(report.render())
    if not report.complete:
        sys.exit(1)


def _add_operations_commands() -> None:
    """web, status, pause, resume, retry, cancel, export, cleanup (operations/commands.py),
    suppressions (operations/suppressions.py)."""
    from notifier.operations.commands import COMMANDS
    from notifier.operations.suppressions import suppressions

    for command in COMMANDS:
        main.add_command(command)
    main.add_command(suppressions)


_add_operations_commands()


if __name__ == "__main__":
    main()
