"""RQ entry points, thin: each builds (once per process) the deliverer and hands it the batch.

RQ jobs name them by the stable path `notifier.tasks.<name>` (see notifier/tasks.py).
"""

from __future__ import annotations

import os
import traceback

from notifier.config import load_settings
from notifier.errors import NotifierError
from notifier.pipeline.delivery import Deliverer
from notifier.pipeline.runtime import build_deliverer
from notifier.redaction import Redactor, secret_values
from notifier.store import Claim


class BatchFailed(NotifierError):
    """An RQ job failed; its message is the original traceback, redacted, because RQ keeps
    failed jobs' tracebacks in Redis for days (`failure_ttl`) where anyone with Redis reads them."""

_deliverer: Deliverer | None = None
_deliverer_pid: int | None = None


def _current_deliverer() -> Deliverer:
    """One deliverer per process; a forked work horse builds its own (no shared sockets)."""
    global _deliverer, _deliverer_pid
    if _deliverer is None or _deliverer_pid != os.getpid():
        _deliverer = build_deliverer(load_settings())
        _deliverer_pid = os.getpid()
    return _deliverer


def deliver_batch(claims: list[list[str]]) -> dict[str, int]:
    """Deliver `[[job_id, lease_token], ...]`; returns counts by outcome (sent, retried, ...)."""
    parsed = [Claim(job_id=str(job_id), lease_token=str(token)) for job_id, token in claims]
    try:
        return _current_deliverer().deliver_batch(parsed)
    except Exception:
        raise BatchFailed(_redact(traceback.format_exc())) from None


def _redact(text: str) -> str:
    try:
        secrets = secret_values(load_settings())
    except NotifierError:
        secrets = []
    return Redactor(secrets)(text)
