"""The one operation every backend offers: call a SQL function by name with named arguments."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class FunctionCaller(Protocol):
    """Calls `public.<function>(name => value, ...)` and returns its rows as dicts.

    Values are plain JSON-able Python (str, int, float, bool, None, dict, list), so the same
    call works over psycopg and over PostgREST's `/rpc/<function>`.
    """

    def call(self, function: str, params: Mapping[str, Any]) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class FunctionStore:
    """What every typed store shares: one caller, closed with the store, and a scalar call
    (a function returning one value answers one row keyed by the function's name)."""

    def __init__(self, caller: FunctionCaller) -> None:
        self._caller = caller

    def close(self) -> None:
        self._caller.close()

    def _scalar(self, function: str, **params: Any) -> Any:
        rows = self._caller.call(function, params)
        return rows[0][function] if rows else None


@dataclass(frozen=True)
class UnreadableJson:
    """Stands in for a json/jsonb value Python cannot decode (nested deeper than its parser
    recurses), so one such row reads as a readable problem of its own job instead of an
    exception that would sink every row of the same call (a batch of started attempts)."""

    reason: str
