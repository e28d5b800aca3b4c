"""The session-only queries of notifier/store/queries.sql, loaded once into `QUERIES` (name → SQL).

A `-- name --` line starts a query; the comment line after it says what the query is for (the
loader insists, so none goes undocumented). Text before the first header is the file's own
introduction. Python never builds SQL by concatenation: a query is used as it is written.
"""

from __future__ import annotations

import re
from importlib.resources import files
from types import MappingProxyType
from typing import LiteralString

_HEADER = re.compile(r"^-- ([a-z0-9_]+) --$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """`{name: query}` from a named-query file; ValueError on a duplicate or undocumented one."""
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        body = body.strip()
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        if not body.startswith("-- "):
            raise ValueError(f"query {name!r} needs a one-line comment saying what it is for")
        if not body.partition("\n")[2].strip():
            raise ValueError(f"query {name!r} has no SQL")
        queries[name] = body
    return queries


QUERIES = MappingProxyType(parse(files("notifier.store").joinpath("queries.sql").read_text()))


def query(name: str) -> LiteralString:
    """The SQL of one named query. Typed a literal for psycopg: it is our own file's text,
    never built from input (mypy treats LiteralString as str, so no cast is needed)."""
    return QUERIES[name]
