"""A loopback stand-in for Supabase's REST API (PostgREST's RPC) over a real PostgreSQL.

The PostgREST binary cannot be installed here, so the Supabase backend is tested against this
server, which implements the part of PostgREST's contract notifier relies on, as PostgREST's
documentation states it (docs.postgrest.org, "Functions as RPC", "Errors", "Authentication"):

- `POST /rest/v1/rpc/<function>` with a JSON object: each key is a named argument. The overload
  is chosen by argument names (the keys must be argument names, and every argument without a
  default must be given); none → 404 `PGRST202`, several → 300 `PGRST203`.
- Arguments are converted by the database from JSON (`json_to_record`), as PostgREST does.
- A set-returning or table function answers a JSON array; a scalar a bare JSON value; a single
  composite one object; `void` 204 with no body.
- Supabase's gateway wants `apikey` (a JWT the project signed); PostgREST takes
  `Authorization: Bearer <jwt>` (HS256, the project's secret; none → the anon role), and runs
  each request in its own transaction after `set local role <the JWT's role claim>` and
  `set_config('request.jwt.claims', <claims>, true)`.
- Errors: `{code, message, details, hint}`, the SQLSTATE mapped to an HTTP status by
  PostgREST's table (P0001 → 400, 23505 → 409, 42501 → 401 anon / 403 otherwise, 08*/53* →
  503, 57014 → 500, 42883 → 404, …); a bad JWT 401 `PGRST301`.

Differences, on purpose: functions are looked up live (PostgREST answers PGRST202 until its
schema cache is reloaded); only `public` is exposed; no filters on RPC results.
`unavailable_for(seconds)` makes it answer 503 `PGRST001` (the database unreachable) meanwhile.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

RPC_PREFIX = "/rest/v1/rpc/"
APPLICATION_NAME = "postgrest-standin"
ANON_ROLE = "anon"


def make_jwt(claims: dict[str, Any], secret: str) -> str:
    """An HS256 JWT, as Supabase issues its anon and service_role keys."""

    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def verify_jwt(token: str, secret: str) -> dict[str, Any]:
    """The claims of a valid HS256 JWT; ValueError (with PostgREST's wording) otherwise."""
    try:
        header, payload, signature = token.split(".")
    except ValueError:
        raise ValueError("Expected 3 parts in JWT; got " + str(token.count(".") + 1)) from None
    expected = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(_unb64(signature), expected):
        raise ValueError("JWSError JWSInvalidSignature")
    if json.loads(_unb64(header)).get("alg") != "HS256":
        raise ValueError("JWSError JWSInvalidSignature")
    claims: dict[str, Any] = json.loads(_unb64(payload))
    if "exp" in claims and float(claims["exp"]) <= time.time():
        raise ValueError("JWT expired")
    return claims


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def http_status(sqlstate: str, role: str) -> int:
    """PostgREST's SQLSTATE → HTTP status table (docs: references/errors)."""
    exact = {
        "23503": 409, "23505": 409, "25006": 405, "P0001": 400, "42883": 404, "42P01": 404,
        "42P17": 500, "42501": 401 if role == ANON_ROLE else 403,
    }  # fmt: skip
    if sqlstate in exact:
        return exact[sqlstate]
    by_class = {
        "08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500,
        "38": 500, "39": 500, "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500,
        "57": 500, "58": 500, "F0": 500, "HV": 500, "P0": 500, "XX": 500,
    }  # fmt: skip
    return by_class.get(sqlstate[:2], 400)


@dataclass(frozen=True)
class Overload:
    """One function of that name: its input arguments (name → SQL type), how many of the last
    ones have defaults, and what it returns."""

    arguments: dict[str, str]
    defaults: int
    returns_set: bool
    returns_void: bool

    def accepts(self, keys: set[str]) -> bool:
        names = list(self.arguments)
        required = set(names[: len(names) - self.defaults])
        return keys <= set(names) and required <= keys


class PostgrestStandin:
    """`with PostgrestStandin(database_url, jwt_secret) as api:` then `api.url` is SUPABASE_URL."""

    def __init__(self, database_url: str, jwt_secret: str) -> None:
        self._secret = jwt_secret
        self._pool = ConnectionPool(
            make_conninfo(database_url, application_name=APPLICATION_NAME),
            min_size=1,
            max_size=8,
            open=False,
        )
        self._unavailable_until = 0.0
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()  # function → requests answered 2xx
        self.statuses: Counter[int] = Counter()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def key(self, role: str = "service_role") -> str:
        """A key as the Supabase dashboard shows it (anon or service_role)."""
        return make_jwt({"iss": "supabase", "role": role, "exp": time.time() + 3600}, self._secret)

    def unavailable_for(self, seconds: float) -> None:
        """Answer 503 (the database unreachable) to every request for `seconds`."""
        with self._lock:
            self._unavailable_until = time.monotonic() + seconds

    def __enter__(self) -> Self:
        self._pool.open(wait=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._pool.close()

    # The request, step by step: gateway (apikey), JWT, overload, transaction, answer.

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        """(status, JSON body or None for no body) for one request."""
        if not path.startswith(RPC_PREFIX):
            return 404, _error("PGRST125", f"Invalid path specified in request URL: {path}")
        with self._lock:
            unavailable = time.monotonic() < self._unavailable_until
        if unavailable:
            return 503, _error("PGRST001", "Database client error. Retrying the connection.")
        apikey = headers.get("apikey")
        if not apikey:
            return 401, {"message": "No API key found in request",
                         "hint": "No `apikey` request header or url param was found."}  # fmt: skip
        try:
            verify_jwt(apikey, self._secret)
        except ValueError:
            return 401, {"message": "Invalid API key",
                         "hint": "Double check your Supabase `anon` or `service_role` API key."}  # fmt: skip
        claims: dict[str, Any] = {"role": ANON_ROLE}
        authorization = headers.get("authorization", "")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            try:
                if scheme.lower() != "bearer":
                    raise ValueError("Authorization header is not a Bearer token")
                claims = verify_jwt(token, self._secret)
            except ValueError as error:
                code = "PGRST303" if str(error) == "JWT expired" else "PGRST301"
                return 401, _error(code, str(error))
        role = str(claims.get("role") or ANON_ROLE)
        try:
            arguments = json.loads(body or b"{}")
        except ValueError as error:
            return 400, _error("PGRST102", f"Empty or invalid json: {error}")
        if not isinstance(arguments, dict):
            return 400, _error("PGRST102", "The request body must be a JSON object")
        function = path.removeprefix(RPC_PREFIX)
        try:
            return self._call(function, arguments, role, claims)
        except psycopg.OperationalError as error:
            return 503, _error("PGRST000", f"Database connection error: {error}")

    def _call(
        self, function: str, arguments: dict[str, Any], role: str, claims: dict[str, Any]
    ) -> tuple[int, Any]:
        with self._pool.connection() as conn:
            overloads = _overloads(conn, function)
            matching = [o for o in overloads if o.accepts(set(arguments))]
            if not matching:
                conn.rollback()
                keys = ", ".join(sorted(arguments))
                return 404, _error(
                    "PGRST202",
                    f"Could not find the function public.{function}({keys}) in the schema cache",
                    details=f"Searched for the function public.{function} with parameters "
                    f"{keys or 'no parameters'} or with a single unnamed json/jsonb parameter, "
                    "but no matches were found in the schema cache.",
                )
            if len(matching) > 1:
                conn.rollback()
                return 300, _error("PGRST203", f"Could not choose the best candidate function "
                                   f"between several overloads of public.{function}")  # fmt: skip
            overload = matching[0]
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
                    conn.execute(
                        "select set_config('request.jwt.claims', %s, true), "
                        "set_config('request.method', 'POST', true), "
                        "set_config('request.path', %s, true)",
                        (json.dumps(claims), RPC_PREFIX + function),
                    )
                    row = conn.execute(
                        _call_query(function, overload, list(arguments)),
                        (json.dumps(arguments),) if arguments else None,
                    ).fetchone()
            except psycopg.OperationalError:
                raise
            except psycopg.Error as error:
                state = error.sqlstate or "XX000"
                diag = error.diag
                return http_status(state, role), _error(
                    state, diag.message_primary or str(error), diag.message_detail,
                    diag.message_hint,
                )  # fmt: skip
        self.calls[function] += 1
        if overload.returns_void:
            return 204, None
        return 200, json.loads(row[0]) if row and row[0] is not None else None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload = standin.answer(self.path.split("?")[0], headers, body)
                standin.statuses[status] += 1
                raw = b"" if payload is None and status == 204 else json.dumps(payload).encode()
                self.send_response(status)
                if status != 204:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _error(
    code: str, message: str, details: str | None = None, hint: str | None = None
) -> dict[str, Any]:
    return {"code": code, "message": message, "details": details, "hint": hint}


def _overloads(conn: psycopg.Connection[Any], function: str) -> list[Overload]:
    """The functions of this name in `public`, as PostgREST's schema cache describes them."""
    rows = conn.execute(
        """
        select p.proretset, p.prorettype = 'pg_catalog.void'::regtype as void, p.pronargdefaults,
               coalesce(p.proargnames, '{}') as names,
               coalesce(p.proargmodes::text[], '{}') as modes,
               array(select format_type(t, null) from unnest(
                 coalesce(p.proallargtypes, p.proargtypes::oid[])) as t) as types
          from pg_proc p
         where p.pronamespace = 'public'::regnamespace and p.proname = %s and p.prokind = 'f'
        """,
        (function,),
    ).fetchall()
    overloads = []
    for returns_set, void, defaults, names, modes, types in rows:
        arguments = {
            name: types[i]
            for i, name in enumerate(names)
            if (modes[i] if modes else "i") in ("i", "b", "v") and name
        }
        overloads.append(Overload(arguments, defaults, returns_set, void))
    return overloads


def _call_query(function: str, overload: Overload, keys: list[str]) -> sql.Composed:
    """`select <result as json text> from json_to_record($1) as _(args), lateral fn(a := _.a)`."""
    call = sql.SQL("{}.{}({})").format(
        sql.Identifier("public"),
        sql.Identifier(function),
        sql.SQL(", ").join(
            sql.SQL("{} := _.{}").format(sql.Identifier(k), sql.Identifier(k)) for k in keys
        ),
    )
    if overload.returns_void:
        result = sql.SQL("null::text")
    elif overload.returns_set:
        result = sql.SQL("coalesce(json_agg(_r), '[]')::text")
    else:
        result = sql.SQL("to_json(_r)::text")
    if not keys:
        return sql.SQL("select {} from {} as _r").format(result, call)
    record = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(k), sql.SQL(overload.arguments[k])) for k in keys
    )
    return sql.SQL("select {} from json_to_record(%s::json) as _({}), lateral {} as _r").format(
        result, record, call
    )
