"""`notifier suppressions list|add|remove`: the operator's view of the suppression list.

Addresses land on the list by themselves (a bounce, a spam report, an unsubscribe, a Twilio
STOP, a one-click unsubscribe); this is how an operator reads it, adds one by hand, or lifts
one (the person asked again, the number was reassigned). Exit codes as in commands.py.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from notifier.cli_common import settings_or_exit
from notifier.config import Settings
from notifier.operations.commands import _database_errors, _echo
from notifier.store.feedback import FeedbackStore

CHANNELS = ("email", "sms", "whatsapp")


@contextmanager
def _feedback_store(settings: Settings) -> Iterator[FeedbackStore]:
    """The feedback store over DATABASE_URL or the Supabase REST API, closed on exit."""
    from notifier.operations.ops import open_store

    with _database_errors(settings), open_store(settings) as (_jobs, caller):
        yield FeedbackStore(caller)


@click.group()
def suppressions() -> None:
    """Addresses notifier never sends to: list, add or lift them.

    \b
    A job to a suppressed address ends `skipped` ("address suppressed: bounce (2026-12-01)")
    with a `blocked` delivery-log row, and no provider request is made.
    """


@suppressions.command("list")
@click.option("--channel", type=click.Choice(CHANNELS), help="Only this channel.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of a table.")
def list_(channel: str | None, as_json: bool) -> None:
    """Show the suppression list, newest first.

    \b
    Examples:
      notifier suppressions list
      notifier suppressions list --channel sms --json | jq -r '.[].address'
    """
    settings = settings_or_exit()
    with _feedback_store(settings) as store:
        rows = store.suppressions(channel)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("no suppressed addresses")
        return
    for row in rows:
        click.echo(
            f"{row['channel']:<9} {row['address']:<40} {row['reason']} "
            f"(by {row['source']}, {str(row['created_at'])[:19]})"
        )


@suppressions.command()
@click.argument("channel", type=click.Choice(CHANNELS))
@click.argument("address")
@click.option("--reason", required=True, help="Why, in a few words; shown on skipped jobs.")
def add(channel: str, address: str, reason: str) -> None:
    """Suppress ADDRESS on CHANNEL (an email address, or a phone number in E.164).

    \b
    Example:
      notifier suppressions add email ada@example.com --reason "asked by phone"
    """
    settings = settings_or_exit()
    with _feedback_store(settings) as store:
        added = store.add_suppression(channel, address, reason, source="operator")
    _echo(settings, f"suppressed {channel} {address}" if added
          else f"{channel} {address} was already suppressed (its first reason stays)")  # fmt: skip


@suppressions.command()
@click.argument("channel", type=click.Choice(CHANNELS))
@click.argument("address")
def remove(channel: str, address: str) -> None:
    """Lift the suppression of ADDRESS on CHANNEL; exit 1 if it was not suppressed.

    \b
    A Twilio STOP is also kept by Twilio itself: the person must text START before messages
    reach them again, whatever this list says.
    Example:
      notifier suppressions remove sms +15551234567
    """
    settings = settings_or_exit()
    with _feedback_store(settings) as store:
        removed = store.remove_suppression(channel, address)
    if not removed:
        _echo(settings, f"{channel} {address} is not suppressed", err=True)
        sys.exit(1)
    _echo(settings, f"lifted the suppression of {channel} {address}")
