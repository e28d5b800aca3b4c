"""The provider stub of the benchmark: SendGrid's `POST /v3/mail/send` in its own process.

It answers 202 after `--latency-ms`, over HTTP/1.1 keep-alive, and records when each job id
(from `personalizations[0].custom_args.job_id`) arrived, so the benchmark can check that every
job got exactly one request and measure enqueue → provider latency. The first requests, and
then every 50th, are checked against SendGrid's official spec (the same checker as the tests'
loopback; checking every one would make the stub, not notifier, the bottleneck).
`GET /stats` returns what it saw; `POST /reset` forgets it. Usage:
python -m bench.stub --port 0 --latency-ms 100   (prints the port it listens on)
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.loopback import RecordedRequest, SendGridLoopback, spec_checker

CHECK_FIRST = 25
CHECK_EVERY = 50


class StubState:
    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.lock = threading.Lock()
        self.arrivals: dict[str, list[float]] = {}
        self.count = 0
        self.violations: list[str] = []
        self.checker = spec_checker(
            SendGridLoopback.spec_file, SendGridLoopback.spec_path, SendGridLoopback.spec_server_url
        )

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "count": self.count,
                "arrivals": {job: times for job, times in self.arrivals.items()},
                "violations": list(self.violations[:20]),
            }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 60
    state: StubState

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        body = json.dumps(self.state.stats()).encode()
        self._answer(200, body, {"Content-Type": "application/json"})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/reset":
            with self.state.lock:
                self.state.arrivals.clear()
                self.state.count = 0
                self.state.violations.clear()
            self._answer(204)
            return
        arrived = time.time()
        body = json.loads(raw or b"{}")
        job_id = str(body["personalizations"][0]["custom_args"]["job_id"])
        with self.state.lock:
            self.state.count += 1
            number = self.state.count
            self.state.arrivals.setdefault(job_id, []).append(arrived)
        if number <= CHECK_FIRST or number % CHECK_EVERY == 0:
            request = RecordedRequest(
                "POST", self.path, {}, dict(self.headers.items()), body, raw
            )
            errors = self.state.checker.errors(request)
            if errors:
                with self.state.lock:
                    self.state.violations.extend(errors)
                self._answer(400, json.dumps({"errors": [{"message": e} for e in errors]}).encode())
                return
        if self.state.latency:
            time.sleep(self.state.latency)
        self._answer(202, headers={"X-Message-Id": secrets.token_urlsafe(12)})


class StubServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # a burst of new keep-alive connections must not be refused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    Handler.state = StubState(args.latency_ms / 1000)
    server = StubServer(("127.0.0.1", args.port), Handler)
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
