"""`notifier adopt`: settle what the original worker (TypeScript + BullMQ) left in flight.

The original worker put each due `pending` row into the BullMQ queue `notification-queue`
(BullMQ job id = database job id), set the row to `processing`, and wrote `sent`/`failed` when
the BullMQ job finished. Rows it left `processing` (notifier's own attempts always carry a
lease token, these never do) are settled by what BullMQ still knows of them:

  completed, success true        → sent (message_id from the return value)
  completed, success false       → failed (its `error`)
  failed (attempts exhausted)    → failed (BullMQ's failedReason)
  waiting, prioritized, delayed  → removed from the old queue, then pending
  active                         → removed from the old queue, then as "no trace"
  no trace (completed jobs are   → sent if a `delivered` log row exists, else pending with
  removed after a while)           metadata.unknown_outcome: delivered again, at least once

A job is removed from the old queue before its row changes, so an old worker started again can
never send what notifier now owns. Unfinished BullMQ jobs whose row is not `processing` (the old
worker added them but died before updating the row) are removed too. Every state change is
`adopt_notification_job`; a second run finds nothing left to do.

BullMQ's layout (read from bullmq 6.7.0's own Lua scripts, the same in 5.x): job `<prefix>:
<queue>:<id>` is a hash (`data`, `opts`, `returnvalue` as JSON, `failedReason` as text, `atm`
attempts made, `ats` attempts started, `finishedOn` in ms); its lock is `<...>:<id>:lock`
(a PX key while a worker holds it); states are the lists `wait`, `paused`, `active` and the
sorted sets `prioritized`, `delayed`, `completed`, `failed`, `waiting-children`. Workers name
their blocking connection `<prefix>:<base64(queue)>` (`...:w:<name>` when named).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from redis import Redis
from redis.exceptions import ResponseError

from notifier.errors import NotifierError
from notifier.store import JobStore

DEFAULT_QUEUE = "notification-queue"
DEFAULT_PREFIX = "bull"
_WAITING_STATES = ("waiting", "paused", "prioritized", "delayed", "waiting-children")
# Membership checks in BullMQ's own order (getStateV2): a job sits in one of these at a time.
_STATE_KEYS = (
    ("completed", "zset"),
    ("failed", "zset"),
    ("delayed", "zset"),
    ("prioritized", "zset"),
    ("active", "list"),
    ("wait", "list"),
    ("paused", "list"),
    ("waiting-children", "zset"),
)
_STATE_NAMES = {"wait": "waiting"}


@dataclass(frozen=True)
class OldJob:
    """What the old BullMQ queue holds for one job id."""

    job_id: str
    state: str  # completed | failed | delayed | prioritized | active | waiting | paused | ...
    fields: dict[str, str]
    lock_ttl_ms: int = 0

    @property
    def attempts(self) -> int:
        return max(int(self.fields.get("atm") or 0), int(self.fields.get("ats") or 0))

    def return_value(self) -> Any:
        try:
            return json.loads(self.fields.get("returnvalue") or "null")
        except ValueError:
            return None

    def finished_at(self) -> datetime | None:
        finished = self.fields.get("finishedOn")
        return datetime.fromtimestamp(int(finished) / 1000, UTC) if finished else None


class OldQueue:
    """A read-only view of one BullMQ queue over redis-py (`decode_responses=True`)."""

    def __init__(self, redis: Redis, name: str = DEFAULT_QUEUE, prefix: str = DEFAULT_PREFIX):
        self.redis, self.name, self.prefix = redis, name, prefix

    def key(self, suffix: str) -> str:
        return f"{self.prefix}:{self.name}:{suffix}"

    def unfinished_ids(self) -> set[str]:
        """Every job a BullMQ worker could still run (or is running)."""
        pipe = self.redis.pipeline(transaction=False)
        for suffix in ("wait", "paused", "active"):
            pipe.lrange(self.key(suffix), 0, -1)
        for suffix in ("prioritized", "delayed", "waiting-children"):
            pipe.zrange(self.key(suffix), 0, -1)
        return {str(job_id) for ids in pipe.execute() for job_id in ids}

    def jobs(self, job_ids: Iterable[str]) -> dict[str, OldJob]:
        """The state of each id BullMQ knows; ids it has no trace of are absent."""
        found: dict[str, OldJob] = {}
        ids = list(job_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            pipe = self.redis.pipeline(transaction=False)
            for job_id in chunk:
                for suffix, kind in _STATE_KEYS:
                    if kind == "zset":
                        pipe.zscore(self.key(suffix), job_id)
                    else:
                        pipe.lpos(self.key(suffix), job_id)
                pipe.hgetall(self.key(job_id))
                pipe.pttl(self.key(f"{job_id}:lock"))
            answers = pipe.execute()
            width = len(_STATE_KEYS) + 2
            for index, job_id in enumerate(chunk):
                row = answers[index * width : (index + 1) * width]
                member = next(
                    (s for (s, _), hit in zip(_STATE_KEYS, row, strict=False) if hit is not None),
                    None,
                )
                if member is None:
                    continue  # no trace, or a bare hash no worker can reach
                found[job_id] = OldJob(
                    job_id, _STATE_NAMES.get(member, member), dict(row[-2]), max(row[-1], 0)
                )
        return found

    def connected_workers(self) -> list[str]:
        """Addresses of BullMQ workers of this queue still connected (CLIENT LIST names)."""
        name = f"{self.prefix}:{base64.b64encode(self.name.encode()).decode()}"
        try:
            clients = self.redis.client_list()
        except ResponseError:
            return []  # CLIENT LIST is disabled on some managed Redis; the lock check remains
        return [
            str(client.get("addr"))
            for client in clients
            if client.get("name") == name or str(client.get("name", "")).startswith(f"{name}:w:")
        ]


@dataclass(frozen=True)
class Verdict:
    """How one `processing` row is settled (`outcome` is adopt_notification_job's p_outcome)."""

    job_id: str
    bullmq_state: str  # "no trace" when BullMQ has none
    outcome: str  # sent | failed | pending | unknown
    remove: bool = False
    message_id: str | None = None
    reason: str | None = None
    processed_at: datetime | None = None
    attempts: int = 0


def verdict(job_id: str, old: OldJob | None) -> Verdict:
    """Pure: the old queue's word on a job the original worker left `processing`."""
    if old is None:
        return Verdict(job_id, "no trace", "unknown")
    state, attempts, finished = old.state, old.attempts, old.finished_at()
    if state in ("active", *_WAITING_STATES):
        outcome = "unknown" if state == "active" else "pending"
        return Verdict(job_id, state, outcome, remove=True, attempts=attempts)
    if state == "failed":
        reason = old.fields.get("failedReason") or "failed in the original worker"
        return Verdict(job_id, state, "failed", False, None, reason, finished, attempts)
    result = old.return_value()
    success = result.get("success") if isinstance(result, dict) else None
    if success is True:
        message_id = None if result.get("messageId") is None else str(result["messageId"])
        delivered = _parse_time(result.get("deliveredAt")) or finished
        return Verdict(job_id, state, "sent", False, message_id, None, delivered, attempts)
    if success is False:
        reason = str(result.get("error") or "the original worker reported success: false")
        return Verdict(job_id, state, "failed", False, None, reason, finished, attempts)
    return Verdict(job_id, state, "unknown", attempts=attempts)  # completed, no readable result


class Remover(Protocol):
    """Removes jobs from the old queue; returns, per id, whether it is gone."""

    description: str

    def remove(self, job_ids: list[str]) -> dict[str, bool]: ...


# BullMQ's removeJob-2.lua (bullmq 6.7.0) for a job without parent or children, which is all the
# original worker creates: refuse a locked job, take it out of whichever state holds it, delete
# its keys and dedup key, and emit the same `removed` event. Returns 1 removed, 0 locked,
# -2 part of a flow (left alone).
_REMOVE_JOB_LUA = """
local jobKey, jobId, prefix = KEYS[1], ARGV[1], ARGV[2]
if redis.call("EXISTS", jobKey .. ":lock") == 1 then return 0 end
if redis.call("HEXISTS", jobKey, "parentKey") == 1
   or redis.call("SCARD", jobKey .. ":dependencies") > 0 then return -2 end
local prev = "unknown"
for _, zset in ipairs({"completed", "waiting-children", "delayed", "failed", "prioritized"}) do
  if prev == "unknown" and redis.call("ZREM", prefix .. zset, jobId) == 1 then prev = zset end
end
for _, list in ipairs({"wait", "paused", "active"}) do
  if prev == "unknown" and redis.call("LREM", prefix .. list, 1, jobId) == 1 then prev = list end
end
local deid = redis.call("HGET", jobKey, "deid")
if deid and redis.call("GET", prefix .. "de:" .. deid) == jobId then
  redis.call("DEL", prefix .. "de:" .. deid, prefix .. "dn:" .. deid)
end
if redis.call("DEL", jobKey, jobKey .. ":logs", jobKey .. ":dependencies", jobKey .. ":processed",
              jobKey .. ":failed", jobKey .. ":unsuccessful") > 0 then
  local maxEvents = redis.call("HGET", prefix .. "meta", "opts.maxLenEvents") or 10000
  redis.call("XADD", prefix .. "events", "MAXLEN", "~", maxEvents, "*", "event", "removed",
             "jobId", jobId, "prev", prev)
end
return 1
"""


class LuaRemover:
    """notifier's port of BullMQ's removal script, run atomically in Redis (no node needed)."""

    description = "notifier's port of BullMQ's removeJob script (no node/bullmq found)"

    def __init__(self, queue: OldQueue) -> None:
        self._queue = queue
        self._script = queue.redis.register_script(_REMOVE_JOB_LUA)

    def remove(self, job_ids: list[str]) -> dict[str, bool]:
        prefix = self._queue.key("")
        return {
            job_id: self._script(keys=[prefix + job_id], args=[job_id, prefix]) == 1
            for job_id in job_ids
        }


# BullMQ's own Queue.remove, through node, with the bullmq the old worker runs on.
_REMOVE_JOB_JS = """
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const { Queue } = require('bullmq');
// ioredis as bullmq itself resolves it (hoisted, or nested under bullmq).
const IORedis = require(require.resolve('ioredis', { paths: [require.resolve('bullmq')] }));
(async () => {
  const connection = new IORedis(input.url, { maxRetriesPerRequest: null });
  const queue = new Queue(input.queue, { connection, prefix: input.prefix });
  const removed = {};
  for (const id of input.ids) removed[id] = (await queue.remove(id)) === 1;
  await queue.close();
  connection.disconnect();
  process.stdout.write(JSON.stringify(removed));
})().catch((error) => { console.error(String(error && error.stack || error)); process.exit(1); });
"""


class NodeRemover:
    """BullMQ's own `Queue.remove(jobId)`, run by node from a directory that has bullmq."""

    def __init__(self, node: str, directory: Path, version: str, url: str, queue: OldQueue):
        self._node, self._directory, self._url, self._queue = node, directory, url, queue
        self.description = f"BullMQ {version}'s own Queue.remove (node, from {directory})"

    def remove(self, job_ids: list[str]) -> dict[str, bool]:
        payload = {
            "url": self._url,
            "queue": self._queue.name,
            "prefix": self._queue.prefix,
            "ids": job_ids,
        }
        done = subprocess.run(
            [self._node, "-e", _REMOVE_JOB_JS],
            cwd=self._directory,
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise AdoptionError(f"node could not remove jobs with BullMQ: {done.stderr.strip()}")
        return {str(k): bool(v) for k, v in json.loads(done.stdout).items()}


_VERSION_JS = """
require(require.resolve('ioredis', { paths: [require.resolve('bullmq')] }));
console.log(require('bullmq/package.json').version);
"""


def bullmq_version_in(directory: Path) -> tuple[str, str] | None:
    """(node, bullmq version) when node is installed and can load bullmq from `directory`."""
    node = shutil.which("node")
    if node is None or not directory.is_dir():
        return None
    done = subprocess.run(
        [node, "-e", _VERSION_JS],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return (node, done.stdout.strip()) if done.returncode == 0 else None


class AdoptionError(NotifierError):
    """The old queue could not be changed as needed; the message says what to do."""


@dataclass
class AdoptionReport:
    """Jobs per (old queue state, result); `applied` is false for a dry run or a refusal."""

    applied: bool = False
    rows: Counter[tuple[str, str]] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # old-queue jobs that are not ours
    removed_with: str | None = None

    def render(self) -> str:
        if not self.rows:
            lines = ["nothing to adopt: no job is left in flight by the original worker"]
        else:
            header = ("old queue", "now" if self.applied else "would become", "jobs")
            rows = [(s, r, str(n)) for (s, r), n in sorted(self.rows.items())]
            widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
            lines = [
                f"{a.ljust(widths[0])}  {b.ljust(widths[1])}  {c.rjust(widths[2])}"
                for a, b, c in [header, *rows]
            ]
        if any("outcome unknown" in result for _, result in self.rows):
            lines.append(
                "an unknown outcome means the old worker may have sent it: it is delivered again "
                "and may arrive twice; list them with: select id from notification_jobs where "
                "metadata ? 'unknown_outcome'"
            )
        if self.removed_with:
            lines.append(f"removed from the old queue with {self.removed_with}")
        if self.ignored:
            shown = ", ".join(self.ignored[:5]) + (", ..." if len(self.ignored) > 5 else "")
            lines.append(
                f"left alone: {len(self.ignored)} unfinished job(s) in the old queue that are not "
                f"notification jobs ({shown})"
            )
        lines += [f"problem: {problem}" for problem in self.problems]
        return "\n".join(lines)


def adopt(
    store: JobStore, queue: OldQueue, remover: Remover | None, *, dry_run: bool
) -> AdoptionReport:
    """Settle every job the original worker left `processing`; see the module docstring."""
    report = AdoptionReport()
    candidates = {row["job_id"]: row for row in store.adoptable_jobs()}
    old_jobs = queue.jobs(candidates)
    verdicts = [verdict(job_id, old_jobs.get(job_id)) for job_id in candidates]
    leftovers = sorted(queue.unfinished_ids() - candidates.keys())
    statuses = store.job_statuses(leftovers) if leftovers else {}
    stale = [job_id for job_id in leftovers if job_id in statuses]
    report.ignored = [job_id for job_id in leftovers if job_id not in statuses]
    stale_row = {job_id: (f"unfinished, row {statuses[job_id]}", "removed from old queue, "
                          "row unchanged") for job_id in stale}  # fmt: skip

    report.problems += _preflight(queue, old_jobs)
    if dry_run or report.problems:
        for item in verdicts:
            has_log = bool(candidates[item.job_id]["has_delivered_log"])
            report.rows[(item.bullmq_state, _planned(item, has_log))] += 1
        report.rows.update(stale_row.values())
        return report

    report.applied = True
    to_remove = [item.job_id for item in verdicts if item.remove] + stale
    if to_remove and remover is None:
        raise AdoptionError("jobs must be removed from the old queue, but no remover was given")
    removed = remover.remove(to_remove) if to_remove and remover else {}
    report.removed_with = remover.description if removed and remover else None
    for job_id in stale:
        if not removed.get(job_id):
            report.problems.append(
                f"job {job_id} could not be removed from the old queue (locked, or part of a flow)"
            )
        report.rows[stale_row[job_id]] += 1
    for item in verdicts:
        if item.remove and not removed.get(item.job_id):
            report.problems.append(
                f"job {item.job_id} could not be removed from the old queue (locked, or part of a "
                "flow): left processing; stop the old worker and run notifier adopt again"
            )
            continue
        details = {"from": "bullmq", "queue": queue.name, "bullmq_state": item.bullmq_state,
                   "bullmq_attempts": item.attempts}  # fmt: skip
        status = store.adopt(
            item.job_id, item.outcome, message_id=item.message_id, reason=item.reason,
            details=details, processed_at=item.processed_at, attempts=item.attempts,
        )  # fmt: skip
        report.rows[(item.bullmq_state, _result(item, status))] += 1
    return report


def _preflight(queue: OldQueue, old_jobs: dict[str, OldJob]) -> list[str]:
    """Refuse while the old worker still runs: it could take a job while we adopt it."""
    problems = []
    workers = queue.connected_workers()
    if workers:
        problems.append(
            f"the old worker is still running: {len(workers)} BullMQ worker connection(s) to "
            f"queue {queue.name!r} ({', '.join(workers)}). Stop it (pm2 stop "
            "notification-worker), then run notifier adopt again; nothing was changed"
        )
    active = queue.jobs(str(job_id) for job_id in queue.redis.lrange(queue.key("active"), 0, -1))
    for job in sorted({**active, **old_jobs}.values(), key=lambda j: j.job_id):
        if job.state == "active" and job.lock_ttl_ms > 0:
            problems.append(
                f"job {job.job_id} is active and locked by a BullMQ worker for another "
                f"{job.lock_ttl_ms / 1000:.0f} s; once the old worker is stopped, wait for the "
                "lock to expire and run notifier adopt again; nothing was changed"
            )
    return problems


def _planned(item: Verdict, has_delivered_log: bool) -> str:
    if item.outcome == "unknown":
        return _result(item, "sent" if has_delivered_log else "pending")
    return _result(item, item.outcome)


def _result(item: Verdict, status: str | None) -> str:
    if status is None:
        return "unchanged (adopted meanwhile)"
    removed = ", removed from old queue" if item.remove else ""
    if item.bullmq_state == "completed" and status == "failed":
        return "failed (it returned success: false)"
    if item.outcome == "unknown":
        if status == "sent":
            return f"sent (a delivered log row exists){removed}"
        return f"pending, outcome unknown: may duplicate{removed}"
    return f"{status}{removed}"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
