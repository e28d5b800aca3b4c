"""Loopback SendGrid and Twilio that inject faults, and count what they accepted per job.

They keep the spec checks of `tests/support/loopback.py` (a malformed request is still a 400
and a recorded violation) and only change the answer to a valid request: a share of 5xx, of
429, of requests that hang past the worker's provider timeout and are then accepted anyway
(the provider has the message, the worker timed out: an unknown outcome), and an outage
during which every request gets a 503. Every answer is recorded with the job id the request
carries, so a test can count accepted requests per job.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qs, urlsplit

from tests.support.loopback import (
    RecordedRequest,
    ScriptedResponse,
    SendGridLoopback,
    TwilioLoopback,
    sendgrid_error,
    twilio_error,
)


class Fault(StrEnum):
    NONE = "none"
    SERVER_ERROR = "5xx"
    RATE_LIMITED = "429"
    HANG = "hang"  # answered 2xx only after the worker's timeout: accepted, outcome unknown
    OUTAGE = "outage"


@dataclass(frozen=True)
class FaultRates:
    server_error: float = 0.10
    rate_limited: float = 0.05
    hang: float = 0.02


@dataclass(frozen=True)
class Answer:
    job_id: str | None
    fault: Fault
    accepted: bool  # a 2xx was (or, for a hang, will be) written: the provider has the message


class FaultPlan:
    """Decides each answer (seeded, thread-safe) and records it; shared by both providers."""

    def __init__(self, rates: FaultRates, hang_seconds: float, seed: int = 13) -> None:
        self.rates = rates
        self.hang_seconds = hang_seconds
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._outage_until = 0.0
        self.answers: list[Answer] = []

    def start_outage(self, seconds: float) -> None:
        with self._lock:
            self._outage_until = time.monotonic() + seconds

    def decide(self, job_id: str | None) -> Fault:
        with self._lock:
            if time.monotonic() < self._outage_until:
                fault = Fault.OUTAGE
            else:
                roll = self._random.random()
                r = self.rates
                if roll < r.server_error:
                    fault = Fault.SERVER_ERROR
                elif roll < r.server_error + r.rate_limited:
                    fault = Fault.RATE_LIMITED
                elif roll < r.server_error + r.rate_limited + r.hang:
                    fault = Fault.HANG
                else:
                    fault = Fault.NONE
            accepted = fault in (Fault.NONE, Fault.HANG)
            self.answers.append(Answer(job_id, fault, accepted))
            return fault

    def accepted_per_job(self) -> Counter[str]:
        with self._lock:
            return Counter(a.job_id for a in self.answers if a.accepted and a.job_id)

    def requests_per_job(self) -> Counter[str]:
        with self._lock:
            return Counter(a.job_id for a in self.answers if a.job_id)

    def fault_counts(self) -> Counter[str]:
        with self._lock:
            return Counter(str(a.fault) for a in self.answers)


def sendgrid_job_id(request: RecordedRequest) -> str | None:
    """`personalizations[0].custom_args.job_id`, where notifier puts it."""
    try:
        return str(request.body["personalizations"][0]["custom_args"]["job_id"])
    except (KeyError, IndexError, TypeError):
        return None


def twilio_job_id(request: RecordedRequest) -> str | None:
    """`job_id` in the query of the `StatusCallback` URL, where notifier puts it."""
    form = request.body if isinstance(request.body, dict) else {}
    callback = form.get("StatusCallback")
    if not isinstance(callback, str):
        return None
    found = parse_qs(urlsplit(callback).query).get("job_id")
    return found[0] if found else None


class FaultySendGrid(SendGridLoopback):
    def __init__(self, plan: FaultPlan) -> None:
        super().__init__()
        self.plan = plan

    def default_response(self, request: RecordedRequest) -> ScriptedResponse:
        fault = self.plan.decide(sendgrid_job_id(request))
        accepted = super().default_response(request)
        if fault is Fault.NONE:
            return accepted
        if fault is Fault.HANG:
            return ScriptedResponse(
                accepted.status, headers=accepted.headers, delay_seconds=self.plan.hang_seconds
            )
        if fault is Fault.RATE_LIMITED:
            return ScriptedResponse(429, sendgrid_error("too many requests"))
        status = 503 if fault is Fault.OUTAGE else 500
        return ScriptedResponse(status, sendgrid_error("internal error (injected)"))


class FaultyTwilio(TwilioLoopback):
    def __init__(self, plan: FaultPlan) -> None:
        super().__init__()
        self.plan = plan

    def default_response(self, request: RecordedRequest) -> ScriptedResponse:
        fault = self.plan.decide(twilio_job_id(request))
        accepted = super().default_response(request)
        if fault is Fault.NONE:
            return accepted
        if fault is Fault.HANG:
            return ScriptedResponse(
                accepted.status, accepted.body, delay_seconds=self.plan.hang_seconds
            )
        if fault is Fault.RATE_LIMITED:
            return ScriptedResponse(429, twilio_error(20429, "Too Many Requests", 429))
        status = 503 if fault is Fault.OUTAGE else 500
        return ScriptedResponse(status, twilio_error(20500, "Internal error (injected)", status))
