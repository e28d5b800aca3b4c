"""`notifier web`: `/health`, `/health/redis`, `/metrics`, and the delivery-feedback routes
(`/webhooks/sendgrid`, `/webhooks/twilio`, `/unsubscribe/<token>`, in feedback_web.py), served
by waitress.

A plain WSGI app: a handful of routes need no framework. waitress is a small, pure-Python,
well-kept WSGI server with a thread pool, so a probe waiting on a hanging Redis never blocks
another request. Every body passes through the `Redactor` before it leaves, so no URL password,
`password=` value or configured key can appear in an answer, even inside a driver's error
message; no answer echoes the request path.

SIGTERM / SIGINT stop it gracefully: it stops accepting at once, lets the requests in hand
finish (up to STOP_GRACE_SECONDS), then exits 0.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from prometheus_client.exposition import choose_encoder
from waitress import create_server, wasyncore  # type: ignore[import-untyped]
from waitress.channel import HTTPChannel  # type: ignore[import-untyped]

from notifier.config import Settings, plain_secret
from notifier.log import event
from notifier.operations.feedback_web import BodyTooLarge, FeedbackRoutes
from notifier.operations.health import health_body, observe, redis_health_body
from notifier.operations.metrics import build_registry
from notifier.redaction import Redactor

logger = logging.getLogger("notifier.operations.web")
STOP_GRACE_SECONDS = 5.0
# Slow clients (documented in docs/operations.md): waitress serves at most CONNECTION_LIMIT
# connections and only closes *idle* ones, so clients trickling their headers a byte at a time
# could hold every slot and make /health unreachable. A request must arrive whole within
# REQUEST_READ_SECONDS of its first byte (or of the connection), and one client address holds at
# most CONNECTIONS_PER_CLIENT connections (further ones are closed at once). A reverse proxy in
# front remains recommended; behind one, every client shares its address.
REQUEST_READ_SECONDS = 10.0
CONNECTIONS_PER_CLIENT = 20
CONNECTION_LIMIT = 100
IDLE_SECONDS = 30
StartResponse = Callable[[str, list[tuple[str, str]]], Any]
Response = tuple[int, list[tuple[str, str]], bytes]
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 413: "Content Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip
READ = ("GET", "HEAD")
Handler = Callable[[dict[str, Any]], Response]
UNSUBSCRIBE_PREFIX = "/unsubscribe/"


class WebApp:
    """The WSGI application; stateless apart from the settings and the metrics registry."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._redact = Redactor.for_settings(settings)
        self._registry = build_registry(settings)
        token = plain_secret(settings.web_token)
        self._token = None if token is None else token.encode("utf-8")
        self._feedback = FeedbackRoutes(settings)
        # path → (handler, the methods it answers)
        self._routes: dict[str, tuple[Handler, tuple[str, ...]]] = {
            "/health": (self._health, READ),
            "/health/redis": (self._health_redis, READ),
            "/metrics": (self._metrics, READ),
            "/webhooks/sendgrid": (self._feedback.sendgrid, ("POST",)),
            "/webhooks/twilio": (self._feedback.twilio, ("POST",)),
            "/webhooks/twilio/inbound": (self._feedback.twilio_inbound, ("POST",)),
            "/": (self._index, READ),
        }

    def _route(self, path: str) -> tuple[Handler, tuple[str, ...]] | None:
        """The handler for a path: a fixed route, or `/unsubscribe/<preference_token>`."""
        if path.startswith(UNSUBSCRIBE_PREFIX):
            token = path[len(UNSUBSCRIBE_PREFIX) :].rstrip("/")
            if token and "/" not in token:
                return functools.partial(self._feedback.unsubscribe, token=token), (*READ, "POST")
            return None
        return self._routes.get(path.rstrip("/") or "/")

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.monotonic()
        path = environ.get("PATH_INFO") or "/"
        found = self._route(path)
        if found is None:
            # Never echo the path: an answer that redacts it would confirm a guessed secret.
            status, headers, body = self._json(404, {"error": "no such path"})
        elif environ.get("REQUEST_METHOD") not in found[1]:
            allowed = ", ".join(found[1])
            status, headers, body = self._json(405, {"error": f"only {allowed} allowed here"})
            headers.append(("Allow", allowed))
        else:
            route = found[0]
            try:
                status, headers, body = route(environ)
            except BodyTooLarge:
                status, headers, body = self._json(413, {"error": "the request body is too large"})
            except Exception:
                logger.exception("web_request_failed", extra={"notifier_fields": {"path": path}})
                status, headers, body = self._json(500, {"error": "internal error; see the log"})
        body = self._redact(body.decode("utf-8")).encode("utf-8")
        headers += [("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
        start_response(f"{status} {_REASONS.get(status, '')}".rstrip(), headers)
        event(
            logger,
            "web_request",
            logging.DEBUG,
            path=_loggable(path),
            status=status,
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    def close(self) -> None:
        """Release what the routes opened (the feedback routes' database pool)."""
        self._feedback.close()

    def _authorized(self, environ: dict[str, Any]) -> bool:
        """No NOTIFIER_WEB_TOKEN, or the request carries it as a bearer token."""
        if self._token is None:
            return True
        scheme, _, given = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8"), self._token
        )

    def _unauthorized(self) -> Response:
        status, headers, body = self._json(
            401, {"error": "send the NOTIFIER_WEB_TOKEN as `Authorization: Bearer <token>`"}
        )
        headers.append(("WWW-Authenticate", 'Bearer realm="notifier"'))
        return status, headers, body

    def _health(self, environ: dict[str, Any]) -> Response:
        status, body = health_body(observe(self._settings), self._settings)
        if not self._authorized(environ):
            # Open to load balancers, but hosts and error messages only with the token.
            body = {"status": body["status"], "timestamp": body["timestamp"]}
        return self._json(status, body)

    def _health_redis(self, environ: dict[str, Any]) -> Response:
        if not self._authorized(environ):
            return self._unauthorized()
        return self._json(*redis_health_body(observe(self._settings), self._settings))

    def _metrics(self, environ: dict[str, Any]) -> Response:
        if not self._authorized(environ):
            return self._unauthorized()
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        return 200, [("Content-Type", content_type)], encoder(self._registry)

    def _index(self, environ: dict[str, Any]) -> Response:
        return self._json(200, {"service": "notifier", "paths": sorted(self._routes)})

    def _json(self, status: int, body: dict[str, Any]) -> Response:
        # Values are redacted before serialisation: JSON escapes a quote, a backslash or (with
        # ensure_ascii) any non-ASCII character, so a secret holding one no longer matches in
        # the serialised text.
        payload = json.dumps(self._redact.value(body), default=str).encode("utf-8")
        return status, [("Content-Type", "application/json")], payload


def _loggable(path: str) -> str:
    """The path for the log, without an unsubscribe token (it unsubscribes whoever has it)."""
    if path.startswith(UNSUBSCRIBE_PREFIX):
        return UNSUBSCRIBE_PREFIX + "<token>"
    return path[:100]


class GuardedChannel(HTTPChannel):  # type: ignore[misc]
    """waitress' channel, with a deadline for reading each request and a cap per client."""

    def __init__(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None) -> None:
        super().__init__(server, sock, addr, adj, map=map)
        self.reading_since: float | None = self.creation_time
        client = _client(addr)
        same = sum(_client(c.addr) == client for c in list(server.active_channels.values()))
        if client is not None and same > CONNECTIONS_PER_CLIENT:
            self.will_close = True

    def received(self, data: bytes) -> bool:
        if data and self.request is None and self.reading_since is None:
            self.reading_since = time.time()
        result: bool = super().received(data)
        if self.request is None:  # every request begun has arrived whole
            self.reading_since = None
        return result


def _client(addr: Any) -> str | None:
    return str(addr[0]) if isinstance(addr, tuple) and addr else None


def _close_slow_readers(server: Any, idle_maintenance: Callable[[float], None]) -> Any:
    def maintenance(now: float) -> None:
        idle_maintenance(now)
        for channel in list(server.active_channels.values()):
            since = getattr(channel, "reading_since", None)
            if since is not None and not channel.requests and now - since > REQUEST_READ_SECONDS:
                channel.will_close = True

    return maintenance


def make_server(settings: Settings) -> Any:
    """A waitress server for the app, bound to NOTIFIER_WEB_HOST:PORT, not yet running."""
    server = create_server(
        WebApp(settings),
        host=settings.web_host,
        port=settings.port,
        threads=settings.web_threads,
        ident="notifier",
        clear_untrusted_proxy_headers=True,
        connection_limit=CONNECTION_LIMIT,
        channel_timeout=IDLE_SECONDS,
        cleanup_interval=1,  # how often the deadlines below are checked
    )
    server.channel_class = GuardedChannel
    server.maintenance = _close_slow_readers(server, server.maintenance)
    return server


def serve(settings: Settings) -> int:
    """Serve until SIGTERM or SIGINT, then stop gracefully; returns the exit code (0)."""
    server = make_server(settings)
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        event(logger, "web_stopping", signal=signal.Signals(signum).name)
        stop_serving(server, stopping)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
    port = int(server.effective_port)
    event(logger, "web_started", host=settings.web_host, port=port, threads=settings.web_threads)
    run_until(server, stopping)
    close = getattr(server.application, "close", None)  # the WebApp, unless wrapped
    if close is not None:
        close()
    event(logger, "web_stopped")
    return 0


def stop_serving(server: Any, stopping: threading.Event) -> None:
    """Ask `run_until` to stop, and wake its loop now. From another thread the loop may notice
    `stopping` on its own and close the wake-up pipe first: then there is nothing to wake."""
    stopping.set()
    with contextlib.suppress(OSError):
        server.pull_trigger()


def run_until(server: Any, stopping: threading.Event) -> None:
    """waitress' loop, until `stopping` is set; then drain and close.

    Stop accepting first, keep serving the requests already in hand (their responses are
    flushed by this loop) for up to STOP_GRACE_SECONDS, then close what is left.
    """
    while not stopping.is_set():
        wasyncore.loop(timeout=0.5, map=server._map, use_poll=True, count=1)
    wasyncore.dispatcher.close(server)  # the listening socket only; the trigger stays
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while _busy(server) and time.monotonic() < deadline:
        wasyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)
    server.task_dispatcher.shutdown(timeout=1)
    wasyncore.close_all(server._map)


def _busy(server: Any) -> bool:
    """A request is being handled or its response is not fully sent yet."""
    return any(
        channel.requests or channel.total_outbufs_len
        for channel in list(server.active_channels.values())
    )
