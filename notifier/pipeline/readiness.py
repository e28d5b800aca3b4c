"""What a worker checks before it registers with RQ: that it could deliver at all.

A worker that cannot render or write (a missing template directory, an unwritable outbox)
would otherwise start, look healthy, and fail every RQ job before any attempt is recorded, so
its claims return to `pending` at lease expiry forever. Checked when `notifier.rq_settings` is
imported; each problem is one `ConfigError` line naming the variable.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from notifier.config import Settings
from notifier.errors import ConfigError
from notifier.pipeline.render import default_template_dir

CHANNEL_FOLDERS = ("email", "sms")


def check_worker_can_deliver(settings: Settings) -> None:
    """Raise `ConfigError` naming the first setting that would make every delivery fail."""
    settings.require_backend()  # DATABASE_URL, or the two Supabase variables
    settings.require_redis_url()
    email, sms = settings.require_providers()
    check_template_dir(settings.template_dir)
    if settings.outbox_dir is not None and "console" in (email, sms):
        check_outbox_dir(settings.outbox_dir)


def check_template_dir(template_dir: Path | None) -> None:
    """The directory exists and holds an `email/` or `sms/` folder of templates."""
    if template_dir is None:
        template_dir = default_template_dir()
        variable = "the stock template directory"
    else:
        variable = "NOTIFIER_TEMPLATE_DIR"
    if not template_dir.is_dir():
        raise ConfigError(f"{variable} ({template_dir}) is not a directory")
    if not any((template_dir / folder).is_dir() for folder in CHANNEL_FOLDERS):
        raise ConfigError(
            f"{variable} ({template_dir}) holds no email/ or sms/ folder of templates"
        )


def check_outbox_dir(outbox_dir: Path) -> None:
    """The outbox exists (or can be made) and a file can be written in it."""
    try:
        outbox_dir.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(dir=outbox_dir, prefix=".notifier-probe-")
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(f"NOTIFIER_OUTBOX_DIR ({outbox_dir}) is not writable: {reason}") from None
