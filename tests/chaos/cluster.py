"""The processes of a chaos run: pollers and stock `rq worker`s, as an operator starts them.

Each process logs to its own file (a pipe nobody reads would block it). The cluster remembers
which processes the test killed on purpose, so at the end any other process that is not
running, and any exit the test did not cause, is a finding.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notifier.devstack.demo import poller_command, worker_command

FORKING_WORKER = [part for part in worker_command() if part not in ("-w", "rq.worker.SimpleWorker")]


@dataclass
class Member:
    kind: str  # "poller", "worker", "simple-worker"
    process: subprocess.Popen[bytes]
    log: Path
    killed_on_purpose: bool = False

    @property
    def exited_on_its_own(self) -> bool:
        return not self.killed_on_purpose and self.process.poll() is not None

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Cluster:
    env: dict[str, str]
    log_dir: Path
    members: list[Member] = field(default_factory=list)
    _numbers: Iterator[int] = field(default_factory=itertools.count)

    def start(self, kind: str) -> Member:
        cmd = {
            "poller": poller_command(),
            "worker": FORKING_WORKER,
            "simple-worker": worker_command(),
        }[kind]
        log = self.log_dir / f"{kind}-{next(self._numbers)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        member = Member(kind, process, log)
        self.members.append(member)
        return member

    def running(self, *kinds: str) -> list[Member]:
        return [
            m for m in self.members if m.kind in kinds and not m.killed_on_purpose
            and m.process.poll() is None
        ]  # fmt: skip

    def kill(self, member: Member) -> Member:
        """SIGKILL `member` and start a replacement of the same kind."""
        member.killed_on_purpose = True
        member.process.send_signal(signal.SIGKILL)
        member.process.wait()
        return self.start(member.kind)

    def unplanned_exits(self) -> list[Member]:
        return [m for m in self.members if m.exited_on_its_own]

    def stop(self) -> None:
        for member in self.members:
            if member.process.poll() is None:
                member.process.send_signal(signal.SIGTERM)
        for member in self.members:
            try:
                member.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                member.process.kill()
                member.process.wait()

    def log_events(self, name: str) -> list[dict[str, Any]]:
        """Every JSON log line with `"event": name`, from every process, oldest first."""
        found = []
        for member in self.members:
            for line in member.log.read_text(errors="replace").splitlines():
                if name not in line or not line.startswith("{"):
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("event") == name:
                    found.append(record)
        return sorted(found, key=lambda r: str(r.get("timestamp")))
