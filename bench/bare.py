"""The limit the pipeline is measured against: render + send, nothing else.

Each process renders its share of the messages with notifier's own `Deliverer.compose` and
sends them with the same `SendGridProvider` (same pooled transport) to the same stub, from
`--threads` threads: no database, no Redis, no RQ. It prints one JSON line with the epoch times
its sends started and ended. Usage: python -m bench.bare --base-url URL --count N --threads T
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

from notifier.pipeline.delivery import Deliverer, DeliveryPolicy
from notifier.pipeline.render import Renderer, default_template_dir
from notifier.providers.sendgrid import SendGridProvider
from notifier.store import JobContext


def job(n: int, tag: str) -> JobContext:
    """A job shaped like the ones the pipeline benchmark enqueues."""
    return JobContext(
        job_id=f"{tag}-{n}", lease_token="bare", recipient_id="r", group_id=None,
        notification_type="immediate", urgency_level="normal", delivery_method="email",
        content={"subject": f"S{n}", "body": f"Body {n}"}, metadata={}, retry_count=0,
        max_retries=3, scheduled_for=None,
        recipient={"id": "r", "name": f"R{n}", "email": f"r{n % 100}@example.com",
                   "preference_token": None, "is_active": True},
        group_name=None, preferences=None,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--tag", default="bare")
    args = parser.parse_args()
    provider = SendGridProvider(
        "SG.bench.key", "bench@example.com", base_url=args.base_url, pool_size=args.threads
    )
    policy = DeliveryPolicy(lease_seconds=60, backoff_base_seconds=1, backoff_cap_seconds=1,
                            send_concurrency=args.threads)  # fmt: skip
    composer = Deliverer(None, {}, {}, Renderer(default_template_dir()), policy)  # type: ignore[arg-type]
    jobs = [job(n, args.tag) for n in range(args.count)]

    def deliver(item: JobContext) -> None:
        provider.send(composer.compose(item))

    with ThreadPoolExecutor(args.threads) as pool:
        cpu = time.process_time()
        started = time.time()
        list(pool.map(deliver, jobs))
        ended = time.time()
        cpu = time.process_time() - cpu
    print(json.dumps({"started": started, "ended": ended, "count": args.count, "cpu_s": cpu}))


if __name__ == "__main__":
    main()
