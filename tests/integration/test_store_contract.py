"""Every SQL function `JobStore` and `FeedbackStore` call exists in the migrated database with
exactly the named arguments the store passes (any it does not pass have defaults).

The methods come from introspecting the store classes, and their arguments are built from the
type hints, so a new method is covered without touching this test; one that cannot be exercised
fails it. This is what PostgREST needs too: it picks a function by its argument names.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import types
import typing
from datetime import UTC, datetime
from typing import Any

import psycopg

from notifier.store import JobStore
from notifier.store.feedback import FeedbackStore

STORES: tuple[type[Any], ...] = (JobStore, FeedbackStore)
# Public store methods that call no SQL function.
NOT_SQL = {"close"}
# A sample value per plain type; containers, unions and dataclasses are built from these.
SAMPLES: dict[Any, Any] = {
    str: "00000000-0000-0000-0000-000000000000",
    int: 1,
    float: 1.0,
    bool: True,
    datetime: datetime(2026, 11, 24, tzinfo=UTC),
    Any: "x",
}

Call = tuple[str, frozenset[str]]


class RecordingCaller:
    """A `FunctionCaller` that records (function, argument names) and answers with no rows."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def call(self, function: str, params: typing.Mapping[str, Any]) -> list[dict[str, Any]]:
        self.calls.append((function, frozenset(params)))
        return []

    def close(self) -> None:
        pass


def sample(hint: Any) -> Any:
    """A value of the hinted type (the first non-None member of a union)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return sample(next(arg for arg in typing.get_args(hint) if arg is not type(None)))
    if origin in (list, collections.abc.Sequence):
        return [sample(typing.get_args(hint)[0])]
    if origin is dict:
        return {}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        fields = typing.get_type_hints(hint)
        return hint(**{f.name: sample(fields[f.name]) for f in dataclasses.fields(hint)})
    if hint in SAMPLES:
        return SAMPLES[hint]
    raise LookupError(f"no sample value for {hint!r}: add one to SAMPLES")


def public_methods(store: type[Any] = JobStore) -> list[str]:
    return sorted(
        name for name, _member in inspect.getmembers(store, inspect.isfunction)
        if not name.startswith("_")
    )  # fmt: skip


def calls_of(method: str, store: type[Any] = JobStore) -> list[Call]:
    """Call `method` with a sample for every argument that has no default; its SQL calls."""
    recorder = RecordingCaller()
    bound = getattr(store(recorder), method)
    hints = typing.get_type_hints(getattr(store, method))
    arguments = {
        name: sample(hints[name])
        for name, parameter in inspect.signature(bound).parameters.items()
        if parameter.default is inspect.Parameter.empty
    }
    bound(**arguments)
    return recorder.calls


def test_the_store_is_introspected_not_listed() -> None:
    methods = public_methods()
    assert {"claim", "complete", "handed_back", "job_statuses", "set_paused"} <= set(methods)
    assert {"record_events", "add_suppression", "unsubscribe"} <= set(public_methods(FeedbackStore))


def test_every_function_the_store_calls_exists_with_exactly_those_arguments(
    db: psycopg.Connection[dict[str, Any]],
) -> None:
    problems: list[str] = []
    checked: set[Call] = set()
    for store in STORES:
        for method in public_methods(store):
            if method in NOT_SQL:
                continue
            where = f"{store.__name__}.{method}"
            try:
                calls = calls_of(method, store)
            except Exception as error:
                problems.append(f"{where} could not be exercised: {error!r}")
                continue
            if not calls:
                problems.append(f"{where} called no SQL function (add it to NOT_SQL?)")
            for function, names in calls:
                checked.add((function, names))
                problems += signature_problems(db, where, function, names)
    assert not problems, "\n".join(problems)
    assert checked, "no SQL function was called"


def signature_problems(
    db: psycopg.Connection[dict[str, Any]], method: str, function: str, names: frozenset[str]
) -> list[str]:
    """What is wrong with calling public.function(name => ...) for these names, if anything."""
    rows = db.execute(
        "select p.oid::regprocedure::text as signature, p.pronargs, p.pronargdefaults,"
        "       coalesce(p.proargnames, '{}') as argnames,"
        "       coalesce(p.proargmodes::text[], '{}') as argmodes"
        "  from pg_proc p where p.proname = %s and p.pronamespace = 'public'::regnamespace",
        (function,),
    ).fetchall()
    where = f"{method} → {function}"
    if len(rows) != 1:
        return [f"{where}: expected exactly one such function, found {len(rows)}"]
    row = rows[0]
    modes = row["argmodes"] or ["i"] * len(row["argnames"])
    inputs = [n for n, m in zip(row["argnames"], modes, strict=True) if m in ("i", "b", "v")]
    required = set(inputs[: row["pronargs"] - row["pronargdefaults"]])
    problems = []
    if unknown := names - set(inputs):
        problems.append(f"{where}: {row['signature']} has no argument {sorted(unknown)}")
    if missing := required - names:
        problems.append(f"{where}: {row['signature']} needs {sorted(missing)} (no default)")
    return problems
