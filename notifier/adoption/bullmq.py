"""The original worker's BullMQ queue, as notifier sees it: read its jobs, remove them.

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
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from redis import Redis
from redis.exceptions import ResponseError

from notifier.config import mask_url
from notifier.errors import NotifierError


class BullMQError(NotifierError):
    """The old queue could not be read or changed as expected."""


def masked(text: str, url: str) -> str:
    """`text` with the old queue's URL masked (`mask_url`) and its password, wherever it
    appears on its own (in node's error output, say), replaced by `***`."""
    text = text.replace(url, mask_url(url))
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for secret in {password, unquote(password)} if password else ():
        text = text.replace(secret, "***")
    return text


DEFAULT_QUEUE = "notification-queue"
DEFAULT_PREFIX = "bull"
WAITING_STATES = ("waiting", "paused", "prioritized", "delayed", "waiting-children")
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
            error = masked(done.stderr.strip(), self._url)
            raise BullMQError(f"node could not remove jobs with BullMQ: {error}")
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
