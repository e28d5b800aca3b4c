"""The operations commands of `notifier` (registered by notifier/cli.py): web, status, pause,
resume, retry, cancel, export, cleanup.

Exit codes: 0 done; 1 it could not be done (a server unreachable, a job not cancellable, a
drain that timed out); 2 a usage or configuration error. Everything printed passes through the
`Redactor`, so no configured password, key or token is ever shown.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import click

from notifier.cli_common import fail as _fail
from notifier.cli_common import session_url_or_exit as _session_url
from notifier.cli_common import settings_or_exit as _settings
from notifier.config import Settings
from notifier.operations.safe_file import UnsafeTarget, open_private_temp, publish
from notifier.redaction import Redactor
from notifier.store.model import JobStatus


def _echo(settings: Settings, text: str, *, err: bool = False) -> None:
    click.echo(Redactor.for_settings(settings)(text), err=err)


@contextmanager
def _database_errors(settings: Settings) -> Iterator[None]:
    """A database error ends the command with exit code 1 and one readable line; a missing
    backend setting with exit code 2."""
    import psycopg

    from notifier.errors import ConfigError, StoreError, StoreUnavailableError
    from notifier.operations.probes import describe_error
    from notifier.store.backend import endpoint

    where = endpoint(settings)
    try:
        yield
    except ConfigError as error:
        _fail(str(error), 2, settings)
    except psycopg.OperationalError as error:
        _fail(f"cannot reach PostgreSQL at {where}: {describe_error(error)}", 1, settings)
    except psycopg.Error as error:
        _fail(f"PostgreSQL at {where} refused: {describe_error(error)}", 1, settings)
    except StoreUnavailableError as error:
        _fail(f"{error} (at {where})", 1, settings)  # the message names the REST API already
    except StoreError as error:
        _fail(f"the Supabase REST API at {where} refused: {error}", 1, settings)


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """--since: `24h`, `30m`, `7d`, `2w` ago, or an ISO 8601 time (UTC unless it has an offset)."""
    if value is None:
        return None
    from notifier.operations.ops import parse_since

    try:
        return parse_since(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.command()
def web() -> None:
    """Serve /health, /health/redis, /metrics, the provider webhooks and the unsubscribe page
    on PORT (default 8000).

    \b
    GET /health         200 healthy or degraded, 503 unhealthy (Redis or Postgres down)
    GET /health/redis   200 only when healthy; queues, workers, breakers, backlog
    GET /metrics        Prometheus text format (OpenMetrics if asked for)
    POST /webhooks/sendgrid, /webhooks/twilio   signed delivery events (see the README)
    GET|POST /unsubscribe/<token>               confirmation page / one-click unsubscribe
    Stops gracefully on SIGTERM. Examples:
      notifier web
      PORT=9100 notifier web
      curl -s localhost:8000/health | jq .checks
    """
    from notifier.operations.web import serve

    settings = _settings()
    try:
        code = serve(settings)
    except OSError as error:
        _fail(f"cannot listen on {settings.web_host}:{settings.port}: {error}", 1, settings)
    sys.exit(code)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead.")
def status(as_json: bool) -> None:
    """Show whether notifications flow: jobs, backlog, failures, workers, breakers, pause.

    \b
    Exits 1 when Postgres or Redis could not be read (what could be read is still shown),
    2 when the database or REDIS_URL is not configured.
    Examples:
      notifier status
      notifier status --json | jq .backlog.due_now
    """
    from notifier.errors import ConfigError
    from notifier.operations.status import collect, render

    settings = _settings()
    try:  # a configuration error is exit 2 with one line, like every command
        settings.require_backend()
        settings.require_redis_url()
    except ConfigError as error:
        _fail(str(error), 2, settings)
    report = collect(settings)
    if as_json:  # redacted value by value: JSON escaping could hide a secret from _echo
        redacted = Redactor.for_settings(settings).value(report)
        _echo(settings, json.dumps(redacted, indent=2, default=str))
    else:
        _echo(settings, render(report))
    sys.exit(1 if report["errors"] else 0)


@click.command()
@click.option("--reason", help="Why; shown by `notifier status` and /health.")
@click.option("--wait", is_flag=True, help="Then wait until nothing is queued or processing.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Seconds --wait waits before giving up (exit 1).",
)
def pause(reason: str | None, wait: bool, timeout: float) -> None:
    """Stop every poller from claiming jobs; workers finish what is already queued.

    \b
    The pause is kept in Postgres: it holds across restarts until `notifier resume`.
    Examples:
      notifier pause --reason "deploy 1.4"
      notifier pause --wait --timeout 300    # drain: returns when nothing is in flight
    """
    from notifier.operations.ops import in_flight, open_store, operator, wait_for_drain

    settings = _settings()
    with _database_errors(settings), open_store(settings) as (store, reader):
        row = store.set_paused(True, by=operator(), reason=reason)
        flight = in_flight(reader)
        _echo(settings, f"claiming paused since {row.get('paused_at')} by {row.get('paused_by')}")
        _echo(settings, f"in flight: {flight.queued} queued, {flight.processing} processing")
        if not wait:
            return
        last = wait_for_drain(
            reader,
            timeout,
            on_tick=lambda f: click.echo(
                f"waiting: {f.queued} queued, {f.processing} processing", err=True
            ),
        )
    if last.total:
        _fail(f"still in flight after {timeout:g} s: {last.queued} queued, "
              f"{last.processing} processing", 1)  # fmt: skip
    click.echo("drained: nothing is queued or processing")


@click.command()
@click.option("--force", is_flag=True, help="Resume even after `notifier handback`.")
def resume(force: bool) -> None:
    """Let pollers claim jobs again (undoes `notifier pause`).

    \b
    After `notifier handback` the original worker owns the queue: resuming would run both,
    so it is refused without --force (`notifier adopt` is the way back).
    Example:
      notifier resume
    """
    from notifier.operations.ops import open_store

    settings = _settings()
    with _database_errors(settings), open_store(settings) as (store, _reader):
        if store.handed_back() and not force:
            _fail("the queue is handed back to the original worker (notifier handback); "
                  "run `notifier adopt` to take it over, or resume --force", 1)  # fmt: skip
        store.set_paused(False)
    click.echo("claiming resumed")


@click.command()
@click.option("--failed", is_flag=True, help="Retry failed jobs (required: the selection).")
@click.option(
    "--since", callback=_since, metavar="SINCE", help="Only jobs failed since: 24h, 7d, ISO time."
)
@click.option(
    "--reason-like",
    help="Only jobs whose failure reason contains this text (ILIKE pattern if it has %).",
)
@click.option(
    "--include-unknown",
    is_flag=True,
    help="Also retry jobs whose outcome was unknown (outcome_unknown_at is set; their failure "
    "reason reads 'outcome unknown: ...'): the provider may have delivered them, so this may "
    "send duplicates.",
)
@click.option("--dry-run", is_flag=True, help="Count the jobs that would be retried.")
def retry(
    failed: bool,
    since: datetime | None,
    reason_like: str | None,
    include_unknown: bool,
    dry_run: bool,
) -> None:
    """Put failed jobs back to pending, due now, with a fresh attempt budget.

    \b
    The previous failure is kept in the job's metadata.manual_retry. Jobs whose outcome was
    unknown (a timeout after the request was sent, NOTIFIER_UNKNOWN_OUTCOME=fail) may have
    been delivered: they are left out unless --include-unknown (which may duplicate).
    Examples:
      notifier retry --failed --dry-run
      notifier retry --failed --since 24h --reason-like "timed out"
      notifier retry --failed --since 2026-11-24T09:00 --reason-like "503%"
    """
    from notifier.operations.ops import open_store, reason_pattern

    if not failed:
        raise click.UsageError("say what to retry: --failed (failed jobs) is the selection")
    settings = _settings()
    pattern = reason_pattern(reason_like) if reason_like else None
    with _database_errors(settings), open_store(settings) as (store, _reader):
        count = store.retry_failed(since, pattern, dry_run, include_unknown)
    if dry_run:
        click.echo(f"would retry {count} failed job(s)")
    else:
        click.echo(f"retried {count} failed job(s): pending again with a fresh attempt budget")


@click.command()
@click.argument("job_ids", nargs=-1, required=True, type=click.UUID)
def cancel(job_ids: tuple[Any, ...]) -> None:
    """Cancel pending, queued or held jobs by id (exit 1 if any could not be cancelled).

    \b
    Examples:
      notifier cancel 3f0c2a4e-8d1b-4c59-9a4e-2b8f6d1e7c10
      notifier cancel ID1 ID2 ID3
    """
    from notifier.operations.ops import cancel_jobs, open_store

    settings = _settings()
    with _database_errors(settings), open_store(settings) as (store, _reader):
        outcomes = cancel_jobs(store, [str(job_id) for job_id in job_ids])
    for outcome in outcomes:
        click.echo(outcome.describe())
    if not all(o.cancelled for o in outcomes):
        sys.exit(1)


@click.command()
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="The .jsonl file to write (- for standard output).",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([status.value for status in JobStatus]),
    help="Only jobs in this status (repeatable).",
)
@click.option(
    "--since", callback=_since, metavar="SINCE", help="Only jobs created since: 24h, 7d, ISO time."
)
@click.option("--with-logs", is_flag=True, help="Add each job's delivery log as delivery_logs.")
def export(out: str, statuses: tuple[str, ...], since: datetime | None, with_logs: bool) -> None:
    """Write jobs (and their delivery logs) as JSON Lines, one job per line, for forensics.

    \b
    Streams with a server-side cursor; a progress bar shows on a terminal.
    Examples:
      notifier export --out failed.jsonl --status failed --with-logs
      notifier export --out - --since 24h | jq -r .status | sort | uniq -c
    """
    settings = _settings()
    database_url = _session_url(settings, "export", "the export streams through a server-side "
                                "cursor; set it to the database's direct or session-pooler "
                                "(port 5432) connection string")  # fmt: skip
    target = None if out == "-" else Path(out)
    partial: Path | None = None
    stream: IO[str] = sys.stdout
    if target is not None:
        try:
            partial, stream = open_private_temp(target)
        except UnsafeTarget as error:
            _fail(str(error), 1)
        except OSError as error:
            _fail(f"cannot write {target}: {error.strerror}", 1)
    try:
        with stream if partial is not None else nullcontext(stream):
            written = _export(stream=stream, database_url=database_url, settings=settings,
                              statuses=statuses, since=since, with_logs=with_logs)  # fmt: skip
        if partial is not None and target is not None:
            publish(partial, target)
    except UnsafeTarget as error:
        if partial is not None:
            partial.unlink(missing_ok=True)
        _fail(str(error), 1)
    except BaseException:
        if partial is not None:
            partial.unlink(missing_ok=True)
        raise
    click.echo(f"exported {written} job(s) to {out}", err=True)


def _export(
    *,
    stream: IO[str],
    database_url: str,
    settings: Settings,
    statuses: tuple[str, ...],
    since: datetime | None,
    with_logs: bool,
) -> int:
    from notifier.operations.export import export_jobs

    with _database_errors(settings), ExitStack() as stack:
        bars: list[Any] = []

        def start(total: int) -> None:
            bar = click.progressbar(length=total, label="exporting", file=sys.stderr)
            bars.append(stack.enter_context(bar))

        return export_jobs(
            database_url,
            stream,
            statuses=statuses,
            since=since,
            with_logs=with_logs,
            on_start=start,
            on_rows=lambda n: bars[0].update(n),
        )


@click.command()
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Keep finished jobs younger than this many days.",
)
def cleanup(days: int) -> None:
    """Delete finished jobs (sent, failed, skipped, cancelled, and digested items whose digest
    is finished) older than --days, with their delivery logs. Preferences are never deleted.

    \b
    Examples:
      notifier cleanup
      notifier cleanup --days 90
    """
    from notifier.operations.ops import open_store

    settings = _settings()
    with _database_errors(settings), open_store(settings) as (store, _reader):
        removed = store.cleanup(days)
    click.echo(
        f"removed {removed} finished job(s) older than {days} days, with their delivery logs; "
        "preferences are kept"
    )


COMMANDS = (web, status, pause, resume, retry, cancel, export, cleanup)
