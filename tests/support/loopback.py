"""Loopback SendGrid and Twilio servers that check every request against the official specs.

Tests and benchmarks point the real SDKs at these servers (`base_url`), so a request that the
real API would reject fails here as well instead of passing against a hand-written stub. Each
request is validated with openapi-core against `specs/` (path, method, auth header presence,
content type, body); one that does not conform gets a 400 answer and lands in
`spec_violations`, which a test can assert to be `[]`.

    with SendGridLoopback() as server:
        server.respond_with(503, headers={"Retry-After": "7"})   # then the default 202
        provider = SendGridProvider("SG.key", "from@example.com", base_url=server.base_url)
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import secrets
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self, cast
from urllib.parse import parse_qs, urlsplit

from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest

SPECS_DIR = Path(__file__).parent / "specs"
SENDGRID_SEND_PATH = "/v3/mail/send"
TWILIO_MESSAGES_PATH = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
FORM = "application/x-www-form-urlencoded"
_REF = re.compile(r'"\$ref": "#/components/([^/"]+)/([^"]+)"')


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it; `errors` are its spec violations (empty when valid)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    raw_body: bytes
    errors: tuple[str, ...] = ()

    def header(self, name: str) -> str | None:
        """Header lookup ignoring case, as HTTP does."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass(frozen=True)
class ScriptedResponse:
    """A queued answer; `disconnect` closes the connection without answering at all."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0
    disconnect: bool = False


def sendgrid_error(message: str, field: str | None = None) -> dict[str, Any]:
    """A SendGrid error body, shaped like the real API's `{"errors": [...]}`."""
    return {"errors": [{"message": message, "field": field, "help": None}]}


def twilio_error(code: int, message: str, status: int = 400) -> dict[str, Any]:
    """A Twilio (legacy format) error body, which the SDK turns into `TwilioRestException`."""
    more_info = f"https://www.twilio.com/docs/errors/{code}"
    return {"code": code, "message": message, "more_info": more_info, "status": status}


def unused_base_url() -> str:
    """A loopback URL where nothing listens, for connection-refused tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _reduce_to_path(document: dict[str, Any], path: str) -> dict[str, Any]:
    """Keep one path and the components it reaches: the full Twilio spec takes ~3 s to load."""
    reduced = {k: v for k, v in document.items() if k not in ("paths", "components")}
    reduced["paths"] = {path: document["paths"][path]}
    components = document.get("components", {})
    kept: dict[str, dict[str, Any]] = {"securitySchemes": components.get("securitySchemes", {})}
    pending: list[Any] = [reduced["paths"]]
    seen: set[tuple[str, str]] = set()
    while pending:
        for section, name in set(_REF.findall(json.dumps(pending.pop()))) - seen:
            seen.add((section, name))
            target = components[section][name]
            kept.setdefault(section, {})[name] = target
            pending.append(target)
    reduced["components"] = kept
    return reduced


class SpecChecker:
    """Checks requests against one path of an official spec, loaded once per process.

    openapi-core decodes a form body property by property, building validators for every
    property the schema declares (25 for a Twilio Message: ~18 ms a request). A form request is
    therefore checked against a copy of the spec whose form schema keeps only the properties the
    request sends: the verdict is the same (absent optional properties check nothing, `required`
    is kept, extra keys are allowed either way) and a check takes ~5 ms.
    """

    def __init__(self, filename: str, path: str, server_url: str) -> None:
        document = json.loads((SPECS_DIR / filename).read_text(encoding="utf-8"))
        self._document = _reduce_to_path(document, path)
        self._spec = OpenAPI.from_dict(self._document)  # validates the spec itself, once
        self._server_url = server_url
        self._variants: dict[frozenset[str], OpenAPI] = {}
        self._lock = threading.Lock()

    def errors(self, request: RecordedRequest) -> list[str]:
        """Spec violations of one request, as readable lines (empty when it conforms)."""
        content_type = request.header("Content-Type") or ""
        mock = MockRequest(
            self._server_url, request.method, request.path, args=request.query,
            headers=request.headers, data=request.raw_body, content_type=content_type.lower(),
        )  # fmt: skip
        with self._lock:  # openapi-core's lazy caches are not documented as thread-safe
            spec = self._spec
            if _media_type(content_type) == FORM:
                spec = self._form_variant(frozenset(request.body or ()))
            return [_describe(e) for e in spec.iter_request_errors(mock)]

    def _form_variant(self, keys: frozenset[str]) -> OpenAPI:
        variant = self._variants.get(keys)
        if variant is None:
            document = copy.deepcopy(self._document)
            for operation in _operations(document):
                media = operation.get("requestBody", {}).get("content", {}).get(FORM, {})
                properties = media.get("schema", {}).get("properties")
                if isinstance(properties, dict):
                    media["schema"]["properties"] = {
                        k: v for k, v in properties.items() if k in keys
                    }
            config = Config(spec_validator_cls=None)  # the unpruned original was validated
            variant = self._variants[keys] = OpenAPI.from_dict(document, config=config)
        return variant


def _operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    methods = ("get", "put", "post", "delete", "patch")
    return [item[m] for item in document["paths"].values() for m in methods if m in item]


@cache
def spec_checker(filename: str, path: str, server_url: str) -> SpecChecker:
    """One checker per spec and process: loading the spec is the slow part (~0.2 s)."""
    return SpecChecker(filename, path, server_url)


def _describe(error: Exception) -> str:
    """A readable line per violation, with the JSON-schema details openapi-core nests inside."""
    cause = error.__cause__
    details = getattr(cause, "schema_errors", None)
    name = getattr(error, "name", None)  # set on parameter errors, e.g. the path's AccountSid
    if details:
        where = [
            f"{name or '/'.join(str(p) for p in d.absolute_path) or '(body)'}: {d.message}"
            for d in details
        ]
        return f"{type(error).__name__}: " + "; ".join(where)
    if cause is not None and str(cause):
        return f"{type(error).__name__}: {cause}"
    return f"{type(error).__name__}: {error}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, loopback: LoopbackServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.loopback = loopback
        self.open_sockets: set[socket.socket] = set()

    def process_request(self, request: Any, client_address: Any) -> None:
        self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet about clients that vanish mid-request (a killed worker); loud otherwise."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def close_open_connections(self) -> None:
        """Cut kept-alive connections too, so a stopped server really stops answering."""
        for sock in list(self.open_sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the Twilio SDK's requests.Session expects
    disable_nagle_algorithm = True  # otherwise each keep-alive request waits ~40 ms (Nagle)
    timeout = 30  # idle keep-alive connections end, so their threads do too

    def _dispatch(self) -> None:
        cast(_Server, self.server).loopback._handle(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and benchmarks read `.requests` instead."""


class LoopbackServer:
    """Base of the two fakes: records, validates, and answers from a scripted queue."""

    spec_file: str
    spec_path: str
    spec_server_url: str

    def __init__(self, *, delay_seconds: float = 0.0) -> None:
        self.delay_seconds = delay_seconds
        self.requests: list[RecordedRequest] = []
        self.spec_violations: list[str] = []
        self.base_url = ""
        self._checker = spec_checker(self.spec_file, self.spec_path, self.spec_server_url)
        self._lock = threading.Lock()
        self._queue: deque[ScriptedResponse] = deque()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        self._httpd = _Server(self)
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"{type(self).__name__}:{self.base_url}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.close_open_connections()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def respond_with(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        delay_seconds: float = 0.0,
    ) -> None:
        """Queue one answer for the next valid request; dict bodies are sent as JSON."""
        with self._lock:
            self._queue.append(ScriptedResponse(status, body, dict(headers or {}), delay_seconds))

    def drop_connection(self) -> None:
        """Make the next valid request see the connection closed before any answer."""
        with self._lock:
            self._queue.append(ScriptedResponse(0, disconnect=True))

    def clear(self) -> None:
        """Forget recorded requests, violations and queued answers (between benchmark phases)."""
        with self._lock:
            self.requests.clear()
            self.spec_violations.clear()
            self._queue.clear()

    def default_response(self, request: RecordedRequest) -> ScriptedResponse:
        raise NotImplementedError

    def violation_response(self, errors: list[str]) -> ScriptedResponse:
        raise NotImplementedError

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        url = urlsplit(handler.path)
        query = parse_qs(url.query, keep_blank_values=True)
        headers = dict(handler.headers.items())
        body = _parse_body(raw, handler.headers.get("Content-Type", ""))
        recorded = RecordedRequest(handler.command, url.path, query, headers, body, raw)
        errors = self._checker.errors(recorded)
        recorded = replace(recorded, errors=tuple(errors))
        with self._lock:
            self.requests.append(recorded)
            self.spec_violations.extend(f"{handler.command} {url.path}: {e}" for e in errors)
            scripted = self._queue.popleft() if self._queue and not errors else None
        if errors:
            answer = self.violation_response(errors)
        else:
            answer = scripted or self.default_response(recorded)
        delay = self.delay_seconds + answer.delay_seconds
        if delay:
            time.sleep(delay)
        if answer.disconnect:
            handler.close_connection = True
            return
        try:
            _write(handler, answer)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
            handler.close_connection = True


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def _parse_body(raw: bytes, content_type: str) -> Any:
    media_type = _media_type(content_type)
    text = raw.decode("utf-8", errors="replace")
    if media_type == "application/json":
        try:
            return json.loads(text)
        except ValueError:
            return None
    if media_type == FORM:
        form = parse_qs(text, keep_blank_values=True)
        return {k: v[0] if len(v) == 1 else v for k, v in form.items()}
    return text or None


def _write(handler: BaseHTTPRequestHandler, answer: ScriptedResponse) -> None:
    headers = dict(answer.headers)
    if answer.body is None:
        payload = b""
    elif isinstance(answer.body, bytes):
        payload = answer.body
    elif isinstance(answer.body, str):
        payload = answer.body.encode("utf-8")
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")
    else:
        payload = json.dumps(answer.body).encode("utf-8")
        headers.setdefault("Content-Type", "application/json")
    handler.send_response(answer.status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


class SendGridLoopback(LoopbackServer):
    """`POST /v3/mail/send`; answers 202 with an `X-Message-Id` by default."""

    spec_file = "sendgrid_mail_v3.json"
    spec_path = SENDGRID_SEND_PATH
    spec_server_url = "https://api.sendgrid.com"

    def default_response(self, request: RecordedRequest) -> ScriptedResponse:
        return ScriptedResponse(202, headers={"X-Message-Id": secrets.token_urlsafe(16)})

    def violation_response(self, errors: list[str]) -> ScriptedResponse:
        return ScriptedResponse(400, {"errors": [{"message": e, "field": None} for e in errors]})


class TwilioLoopback(LoopbackServer):
    """`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`; answers 201 with a Message."""

    spec_file = "twilio_api_v2010.json"
    spec_path = TWILIO_MESSAGES_PATH
    spec_server_url = "https://api.twilio.com"

    def default_response(self, request: RecordedRequest) -> ScriptedResponse:
        form = request.body if isinstance(request.body, dict) else {}
        account_sid = request.path.split("/")[3]
        sid = "SM" + secrets.token_hex(16)
        now = formatdate(usegmt=True).replace("GMT", "+0000")
        uri = f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json"
        message: dict[str, Any] = dict.fromkeys(
            ("date_sent", "error_code", "error_message", "price", "price_unit")
        )
        message.update(
            account_sid=account_sid, api_version="2010-04-01", body=form.get("Body"),
            date_created=now, date_updated=now, direction="outbound-api",
            messaging_service_sid=form.get("MessagingServiceSid"), num_media="0",
            num_segments="1", sid=sid, status="queued", to=form.get("To"), uri=uri,
            subresource_uris={"media": uri.replace(".json", "/Media.json")},
        )  # fmt: skip
        message["from"] = form.get("From")
        return ScriptedResponse(201, message)

    def violation_response(self, errors: list[str]) -> ScriptedResponse:
        message = "; ".join(errors)
        return ScriptedResponse(400, {"message": message, "status": 400, "more_info": __name__})
