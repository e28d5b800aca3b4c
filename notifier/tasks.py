"""`notifier.tasks.deliver_batch` at the dotted path RQ jobs already in Redis name.

The implementation lives in `notifier.pipeline.tasks`; this path stays importable so jobs
enqueued before an upgrade still run.
"""

from notifier.pipeline.tasks import deliver_batch

__all__ = ["deliver_batch"]
