"""Does starting one attempt cost the same whatever the backlog? `python -m bench.plans`

For each backlog (jobs `queued` at once, plus finished history), it times
`start_notification_attempts` for one claim at a time, for the current function and for the
previous one (20261201000110, loaded under another name for the comparison), and prints the
plan of the statement inside the current one (auto_explain, nested statements, as NOTICEs).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import run

MIGRATIONS = Path(__file__).resolve().parents[1] / "supabase" / "migrations"
OLD = "20261201000110_job_functions_once.sql"


def previous_function() -> str:
    """The 000110 definition of start_notification_attempts, renamed `..._v110`."""
    text = (MIGRATIONS / OLD).read_text()
    match = re.search(
        r"create or replace function start_notification_attempts\(.*?\n\$\$;\n", text, re.S
    )
    assert match is not None
    return match.group(0).replace(
        "function start_notification_attempts(", "function start_notification_attempts_v110("
    )


def seed(url: str, queued: int, finished: int) -> list[tuple[str, str]]:
    """`finished` sent jobs and `queued` claimed ones; returns the claims (id, token)."""
    with psycopg.connect(url, autocommit=True) as conn:
        if finished:
            conn.execute(
                "insert into notification_jobs (recipient_id, notification_type, urgency_level, "
                "delivery_method, content, status, processed_at) select (select id from "
                "recipients limit 1), 'immediate', 'normal', 'email', '{}', 'sent', now() "
                "from generate_series(1, %s)",
                (finished,),
            )
        # Statistics taken before the backlog arrives, as autovacuum would have left them: the
        # condition under which the previous plan flipped to scanning the lease index.
        conn.execute("analyze")
        conn.execute(
            "select enqueue_notification_job((select id from recipients limit 1), null, null, "
            "'immediate', 'normal', 'email', jsonb_build_object('subject', 'S', 'body', 'B'), 0) "
            "from generate_series(1, %s)",
            (queued,),
        )
        claims: list[tuple[str, str]] = []
        while len(claims) < queued:
            rows = conn.execute(
                "select id::text, lease_token::text from claim_notification_jobs(5000, 3600, 'b')"
            ).fetchall()
            if not rows:
                break
            claims += [(r[0], r[1]) for r in rows]
        conn.execute(previous_function())
    return claims


def time_starts(url: str, function: str, claims: list[tuple[str, str]]) -> float:
    """Mean milliseconds per one-claim call."""
    query = f"select count(*) from {function}(%s::jsonb, 300)"
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        for job_id, token in claims:
            conn.execute(query, (json.dumps([{"job_id": job_id, "lease_token": token}]),))
        return 1000 * (time.perf_counter() - started) / len(claims)


def inner_plan(url: str, claim: tuple[str, str]) -> list[str]:
    """The plans of the statements inside the current function, via auto_explain."""
    notices: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        for setting in (
            "load 'auto_explain'", "set auto_explain.log_min_duration = 0",
            "set auto_explain.log_nested_statements = on", "set auto_explain.log_analyze = on",
            "set auto_explain.log_level = notice",
        ):  # fmt: skip
            conn.execute(setting)
        payload = json.dumps([{"job_id": claim[0], "lease_token": claim[1]}])
        conn.execute("select count(*) from start_notification_attempts(%s::jsonb, 300)", (payload,))
    return [n for n in notices if "update notification_jobs" in n.lower()]


def measure(queued: int, finished: int, sample: int) -> dict[str, Any]:
    with run.servers() as env:
        url = env.database()
        claims = seed(url, queued, finished)
        half = min(sample, len(claims) // 2)
        old_ms = time_starts(url, "start_notification_attempts_v110", claims[:half])
        new_ms = time_starts(url, "start_notification_attempts", claims[half : 2 * half])
        plan = inner_plan(url, claims[-1])
    return {"queued": queued, "finished": finished, "old_ms": old_ms, "new_ms": new_ms,
            "plan": plan}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queued", type=int, nargs="+", default=[100, 50_000])
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=50)
    args = parser.parse_args()
    cases = [(q, 0) for q in args.queued] + [(args.queued[-1], args.finished)]
    for queued, finished in cases:
        result = measure(queued, finished, args.sample)
        print(f"{queued:>7,} queued, {finished:>9,} finished: start one claim "
              f"{result['old_ms']:.2f} ms before (000110), {result['new_ms']:.2f} ms now")  # fmt: skip
        for line in result["plan"][:1]:
            print("  " + line.replace("\n", "\n  "))


if __name__ == "__main__":
    main()
