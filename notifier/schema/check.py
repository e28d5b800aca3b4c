"""`notifier migrate --check`: does the installed schema match what supabase/migrations builds?

The expectations are read from the migration files themselves (tables, columns, functions with
their argument types, who may execute them, table grants, policies), so this check cannot drift
from the schema it verifies. Every problem is one readable line; an empty list means "schema OK".

What it verifies:
- every table the migrations create exists; notifier's own tables have every column;
- every function exists with exactly one signature (an old overload left beside a new one makes
  calls ambiguous), and a SECURITY DEFINER one has a fixed search_path;
- end users (anon, authenticated) may execute only the functions the migrations grant to them,
  the service role all of them; table privileges of anon and authenticated are as granted;
- row-level security is on for every table in `public`;
- no policy is wider than intended: none is `USING (true)` / `WITH CHECK (true)` for end users
  on any table, and notifier's tables carry exactly the policies the migrations create.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from notifier.schema.migrate import MIGRATIONS_DIR, changed_since_applied

END_USERS = ("anon", "authenticated")
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
_IDENT = r'(?:public\.)?("[^"]+"|[a-z_][a-z0-9_]*)'
_FUNCTION = re.compile(r"create\s+or\s+replace\s+function\s+" + _IDENT + r"\s*\(", re.I)
_OWN_TABLE = re.compile(r"create\s+table\s+if\s+not\s+exists\s+" + _IDENT + r"\s*\(", re.I)
_APP_TABLE = re.compile(r"create\s+table\s+public\.([a-z_][a-z0-9_]*)\s*\(", re.I)
_ADD_COLUMN = re.compile(
    r"alter\s+table\s+" + _IDENT + r"\s+add\s+column\s+if\s+not\s+exists\s+([a-z_][a-z0-9_]*)", re.I
)
_FUNCTION_GRANT = re.compile(
    r"grant\s+execute\s+on\s+function\s+" + _IDENT + r"\s*\([^)]*\)\s+to\s+([^;]+);", re.I
)
_TABLE_GRANT = re.compile(
    r"grant\s+([a-z,\s]+?)\s+on\s+(?!function|schema)([^;]+?)\s+to\s+([^;]+);", re.I
)
_POLICY = re.compile(
    r"create\s+policy\s+(\"[^\"]+\"|[a-z_][a-z0-9_]*)\s+on\s+"
    + _IDENT
    + r"(?:\s+as\s+\w+)?(?:\s+for\s+(\w+))?(?:\s+to\s+([a-z_,\s]+?))?\s+(?:using|with)\b",
    re.I,
)
_NOT_A_COLUMN = {"primary", "unique", "constraint", "check", "foreign", "exclude", "like"}
_ARG_MODES = {"in", "out", "inout", "variadic"}


@dataclass
class ExpectedFunction:
    name: str
    arg_types: list[str]  # as written in the migration, e.g. "varchar", "jsonb"
    security_definer: bool


@dataclass
class ExpectedSchema:
    """What the migrations build, read from their text (the last definition of a name wins)."""

    functions: dict[str, ExpectedFunction] = field(default_factory=dict)
    own_tables: dict[str, set[str]] = field(default_factory=dict)  # table → columns
    app_tables: set[str] = field(default_factory=set)  # created only when the app lacks them
    end_user_functions: set[str] = field(default_factory=set)  # executable by authenticated
    authenticated_privileges: dict[str, set[str]] = field(default_factory=dict)
    policies: dict[tuple[str, str], tuple[str, frozenset[str]]] = field(default_factory=dict)


def expected_schema(directory: Path = MIGRATIONS_DIR) -> ExpectedSchema:
    expected = ExpectedSchema()
    for path in sorted(directory.glob("*.sql")):
        _read_migration(_strip_comments(path.read_text(encoding="utf-8")), expected)
    return expected


def _read_migration(text: str, expected: ExpectedSchema) -> None:
    for match in _FUNCTION.finditer(text):
        name = _unquote(match.group(1))
        args = _parenthesized(text, match.end() - 1)
        header = text[match.end() : text.find("$", match.end())]
        expected.functions[name] = ExpectedFunction(
            name,
            [_arg_type(arg) for arg in _split_top_level(args) if arg.strip()],
            bool(re.search(r"security\s+definer", header, re.I)),
        )
    for match in _OWN_TABLE.finditer(text):
        columns = expected.own_tables.setdefault(_unquote(match.group(1)), set())
        for item in _split_top_level(_parenthesized(text, match.end() - 1)):
            first = item.split(None, 1)[0].lower() if item.strip() else ""
            if first and first not in _NOT_A_COLUMN:
                columns.add(_unquote(first))
    for match in _ADD_COLUMN.finditer(text):
        expected.own_tables.setdefault(_unquote(match.group(1)), set()).add(match.group(2).lower())
    expected.app_tables.update(m.group(1).lower() for m in _APP_TABLE.finditer(text))
    for match in _FUNCTION_GRANT.finditer(text):
        if "authenticated" in _names(match.group(2)):
            expected.end_user_functions.add(_unquote(match.group(1)))
    for match in _TABLE_GRANT.finditer(text):
        if "authenticated" in _names(match.group(3)):
            privileges = {p.upper() for p in _names(match.group(1))}
            if "ALL" in privileges:
                privileges = set(TABLE_PRIVILEGES)
            for table in _names(match.group(2)):
                expected.authenticated_privileges.setdefault(table, set()).update(privileges)
    for match in _POLICY.finditer(text):
        table = _unquote(match.group(2))
        if table in expected.own_tables:
            roles = frozenset(_names(match.group(4) or "public"))
            cmd = (match.group(3) or "all").upper()
            expected.policies[(table, _unquote(match.group(1)))] = (cmd, roles)


def check(database_url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Every way the schema at `database_url` differs from what the migrations build."""
    expected = expected_schema(directory)
    with psycopg.connect(database_url, row_factory=dict_row, connect_timeout=10) as conn:
        return [
            *_check_tables(conn, expected),
            *_check_functions(conn, expected),
            *_check_triggers(conn, directory),
            *_check_table_privileges(conn, expected),
            *_check_row_level_security(conn, expected),
            *(
                f"migration {m.path.name} changed after it was applied; the database keeps "
                "the old definitions: restore the file, or add a new migration with the change"
                for m in changed_since_applied(conn, directory)
            ),
        ]


_TRIGGER = re.compile(
    r"create\s+trigger\s+([a-z_][a-z0-9_]*)\s.*?\son\s+(?:public\.)?([a-z_][a-z0-9_]*)", re.I | re.S
)


def _check_triggers(conn: psycopg.Connection[Any], directory: Path) -> list[str]:
    """The triggers the migrations create (wake-ups, digest schedule checks, handback)."""
    wanted = {
        (match.group(1), match.group(2))
        for path in sorted(directory.glob("*.sql"))
        for match in _TRIGGER.finditer(path.read_text(encoding="utf-8"))
    }
    rows = conn.execute(
        "select t.tgname, c.relname from pg_trigger t join pg_class c on c.oid = t.tgrelid "
        "where not t.tgisinternal and c.relnamespace = 'public'::regnamespace"
    ).fetchall()
    present = {(row["tgname"], row["relname"]) for row in rows}
    return [f"trigger {name} on {table} is missing" for name, table in sorted(wanted - present)]


def _check_tables(conn: psycopg.Connection[Any], expected: ExpectedSchema) -> list[str]:
    problems = []
    rows = conn.execute(
        "select table_name, array_agg(column_name::text) as columns "
        "from information_schema.columns where table_schema = 'public' group by table_name"
    ).fetchall()
    present = {row["table_name"]: set(row["columns"]) for row in rows}
    for table in sorted(expected.app_tables - present.keys()):
        problems.append(f"table public.{table} is missing")
    for table, columns in sorted(expected.own_tables.items()):
        if table not in present:
            problems.append(f"table public.{table} is missing")
            continue
        for column in sorted(columns - present[table]):
            problems.append(f"column {table}.{column} is missing")
    return problems


def _check_functions(conn: psycopg.Connection[Any], expected: ExpectedSchema) -> list[str]:
    roles = _existing_roles(conn, (*END_USERS, "service_role"))
    problems = [
        f"role {role} does not exist (notifier migrate creates it)"
        for role in (*END_USERS, "service_role")
        if role not in roles
    ]
    rows = conn.execute(
        "select p.oid, p.proname, p.oid::regprocedure::text as signature, "
        "p.proargtypes::oid[] as arg_types, p.prosecdef, p.proconfig "
        "from pg_proc p where p.pronamespace = 'public'::regnamespace and p.proname = any(%s)",
        (list(expected.functions),),
    ).fetchall()
    found: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        for role in (*END_USERS, "service_role"):
            row[role] = role in roles and _value(
                conn, "select has_function_privilege(%s, %s::oid, 'execute')", (role, row["oid"])
            )
        found.setdefault(row["proname"], []).append(row)
    for name, function in sorted(expected.functions.items()):
        wanted_types = [_type_oid(conn, t) for t in function.arg_types]
        wanted = f"{name}({', '.join(_type_name(conn, t) for t in function.arg_types)})"
        versions = found.get(name, [])
        if not versions:
            problems.append(f"function {wanted} is missing")
            continue
        if len(versions) > 1:
            problems.append(
                f"function {name} has {len(versions)} signatures "
                f"({'; '.join(sorted(v['signature'] for v in versions))}): a call can be "
                f"ambiguous; expected only {wanted}"
            )
        elif None not in wanted_types and list(versions[0]["arg_types"]) != wanted_types:
            problems.append(
                f"function {versions[0]['signature']} has the wrong signature: expected {wanted}"
            )
        for version in versions:
            problems += _function_problems(version, function, expected)
    return problems


def _function_problems(
    row: dict[str, Any], function: ExpectedFunction, expected: ExpectedSchema
) -> list[str]:
    problems = []
    signature = row["signature"]
    if function.security_definer and not (
        row["prosecdef"] and any(c.startswith("search_path=") for c in row["proconfig"] or [])
    ):
        problems.append(f"function {signature} should be SECURITY DEFINER with a fixed search_path")
    if row["anon"]:
        problems.append(f"anon can execute {signature}: no notifier function is for anon")
    if row["authenticated"] and function.name not in expected.end_user_functions:
        problems.append(
            f"authenticated can execute {signature}: end users may call only "
            + ", ".join(sorted(expected.end_user_functions))
        )
    if not row["authenticated"] and function.name in expected.end_user_functions:
        problems.append(f"authenticated cannot execute {signature}: signed-in users need it")
    if not row["service_role"]:
        problems.append(f"service_role cannot execute {signature}")
    return problems


def _check_table_privileges(conn: psycopg.Connection[Any], expected: ExpectedSchema) -> list[str]:
    """anon has nothing on notifier's tables; authenticated has exactly what is granted."""
    problems = []
    for table in sorted(expected.own_tables):
        if not _value(conn, "select to_regclass(%s) is not null", (f"public.{table}",)):
            continue  # reported as missing
        for role in sorted(_existing_roles(conn, END_USERS)):
            allowed = expected.authenticated_privileges.get(table, set())
            if role != "authenticated":
                allowed = set()
            held = {
                privilege
                for privilege in TABLE_PRIVILEGES
                if _value(
                    conn,
                    "select has_table_privilege(%s, %s, %s)",
                    (role, f"public.{table}", privilege),
                )
            }
            intended = ", ".join(p for p in TABLE_PRIVILEGES if p in allowed) or "none"
            if extra := [p for p in TABLE_PRIVILEGES if p in held - allowed]:
                problems.append(f"{role} has {', '.join(extra)} on {table}; intended: {intended}")
            if missing := [p for p in TABLE_PRIVILEGES if p in allowed - held]:
                problems.append(
                    f"{role} lacks {', '.join(missing)} on {table}; intended: {intended}"
                )
    return problems


def _check_row_level_security(conn: psycopg.Connection[Any], expected: ExpectedSchema) -> list[str]:
    problems = []
    for row in conn.execute(
        "select c.relname from pg_class c where c.relnamespace = 'public'::regnamespace "
        "and c.relkind in ('r', 'p') and not c.relrowsecurity order by c.relname"
    ).fetchall():
        table = row["relname"]
        problem = f"row-level security is off on table public.{table}"
        if table not in expected.own_tables:  # the app's own table: notifier leaves it alone
            problem += (
                ": through the API anyone may read and change every row it grants them; enable "
                f"it (alter table public.{table} enable row level security) with owner policies"
            )
        problems.append(problem)
    policies = conn.execute(
        "select tablename, policyname, cmd, roles::text[] as roles, qual, with_check "
        "from pg_policies where schemaname = 'public' order by tablename, policyname"
    ).fetchall()
    present = set()
    tables = {
        row["relname"]
        for row in conn.execute(
            "select relname from pg_class where relnamespace = 'public'::regnamespace"
        ).fetchall()
    }
    for policy in policies:
        table, name, roles = policy["tablename"], policy["policyname"], frozenset(policy["roles"])
        label = f'policy "{name}" on {table} ({policy["cmd"]} to {", ".join(sorted(roles))})'
        if roles & {"public", *END_USERS} and "true" in (policy["qual"], policy["with_check"]):
            problems.append(f"{label} lets every end user through (USING/WITH CHECK true)")
        if table not in expected.own_tables:
            continue
        present.add((table, name))
        intended = expected.policies.get((table, name))
        if intended != (policy["cmd"], roles):
            problems.append(f"{label} is not one notifier intends; notifier migrate replaces it")
    for table, name in sorted(expected.policies.keys() - present):
        if table in tables:
            problems.append(f'policy "{name}" on {table} is missing')
    return problems


def _existing_roles(conn: psycopg.Connection[Any], names: tuple[str, ...]) -> set[str]:
    rows = conn.execute("select rolname from pg_roles where rolname = any(%s)", (list(names),))
    return {row["rolname"] for row in rows.fetchall()}


def _value(conn: psycopg.Connection[Any], query: str, params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else next(iter(row.values()))


def _type_oid(conn: psycopg.Connection[Any], written: str) -> int | None:
    oid = _value(conn, "select to_regtype(%s)::oid", (written,))
    return None if oid is None else int(oid)


def _type_name(conn: psycopg.Connection[Any], written: str) -> str:
    name = _value(conn, "select to_regtype(%s)::text", (written,))
    return written if name is None else str(name)


def _strip_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql)


def _parenthesized(text: str, open_at: int) -> str:
    """The text between the parenthesis at `open_at` and its match."""
    depth = 0
    for index in range(open_at, len(text)):
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : index]
    raise ValueError(f"unbalanced parentheses after: {text[open_at : open_at + 60]!r}")


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _arg_type(arg: str) -> str:
    """`p_limit integer default 10` → `integer`; `p_job notification_jobs` → `notification_jobs`."""
    words = re.split(r"\s+(?:default\b|=)", arg.strip(), maxsplit=1, flags=re.I)[0].split()
    if words and words[0].lower() in _ARG_MODES:
        words = words[1:]
    return " ".join(words[1:]).lower()


def _names(text: str) -> list[str]:
    return [_unquote(part.strip()) for part in text.split(",") if part.strip()]


def _unquote(name: str) -> str:
    name = name.strip()
    if name.lower().startswith("public."):
        name = name[len("public.") :]
    return name[1:-1] if name.startswith('"') else name.lower()
