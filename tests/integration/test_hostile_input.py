"""Hostile input at the database's front door: enqueue bounds what it stores, and end users
act only on what they own, however they dress up their session."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.integration.seed import add_recipient

ENQUEUE = "select enqueue_notification_job(%s, %s, %s, p_content => %s) as id"


@contextmanager
def session(
    db: psycopg.Connection[Any], role: str, claims: dict[str, str]
) -> Iterator[None]:
    """A transaction with `role` as the session role and `claims` as the JWT claims."""
    with db.transaction(force_rollback=True):
        db.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        db.execute(psycopg.sql.SQL("set local role {}").format(psycopg.sql.Identifier(role)))
        yield


def nested(depth: int) -> dict[str, Any]:
    content: dict[str, Any] = {"body": "hi"}
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = [value]
    content["metadata"] = value
    return content


def test_content_nested_thousands_deep_is_refused_at_enqueue(db: psycopg.Connection[Any]) -> None:
    ids = add_recipient(db)
    # As an app would send it from SQL: Python's own encoder gives up long before 2,000 levels.
    deep = '{"body": "hi", "metadata": ' + "[" * 1999 + '"leaf"' + "]" * 1999 + "}"
    assert len(deep) < 65536
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="nested more than 32 levels"):
        db.execute(
            "select enqueue_notification_job(%s, null, null, p_content => %s::jsonb)",
            (ids["recipient"], deep),
        )


def test_content_at_the_depth_limit_is_accepted(db: psycopg.Connection[Any]) -> None:
    ids = add_recipient(db)
    assert db.execute(ENQUEUE, (ids["recipient"], None, None, Jsonb(nested(31)))).fetchone()
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="nested more than"):
        db.execute(ENQUEUE, (ids["recipient"], None, None, Jsonb(nested(33))))


@pytest.mark.parametrize("subject", [{"a": "<b>"}, ["x"], 42, True])
def test_a_non_string_subject_is_refused_at_enqueue(
    db: psycopg.Connection[Any], subject: Any
) -> None:
    ids = add_recipient(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="subject must be a string"):
        db.execute(
            ENQUEUE, (ids["recipient"], None, None, Jsonb({"body": "hi", "subject": subject}))
        )


def test_claiming_service_role_in_the_jwt_does_not_lift_an_end_user(
    db: psycopg.Connection[Any],
) -> None:
    mine, theirs = add_recipient(db), add_recipient(db, name="Bo")
    their_job = db.execute(
        ENQUEUE, (theirs["recipient"], None, None, Jsonb({"body": "hi"}))
    ).fetchone()["id"]  # type: ignore[index]
    forged = {"role": "service_role", "sub": mine["owner"]}
    with session(db, "authenticated", forged), pytest.raises(
        psycopg.errors.InsufficientPrivilege
    ):
        db.execute(ENQUEUE, (theirs["recipient"], None, None, Jsonb({"body": "hi"})))
    with session(db, "authenticated", forged):
        cancelled = db.execute("select cancel_notification_job(%s) as ok", (their_job,))
        assert cancelled.fetchone() == {"ok": False}


def test_an_end_user_cannot_attach_another_owners_update(db: psycopg.Connection[Any]) -> None:
    mine, theirs = add_recipient(db), add_recipient(db, name="Bo")
    memories = {
        who: db.execute(
            "insert into memories (group_id, title) values (%s, 't') returning id",
            (ids["group"],),
        ).fetchone()["id"]  # type: ignore[index]
        for who, ids in (("mine", mine), ("theirs", theirs))
    }
    claims = {"role": "authenticated", "sub": mine["owner"]}
    with session(db, "authenticated", claims):
        db.execute(ENQUEUE, (mine["recipient"], None, memories["mine"], Jsonb({"body": "hi"})))
    with session(db, "authenticated", claims), pytest.raises(
        psycopg.errors.InsufficientPrivilege, match="does not belong"
    ):
        db.execute(ENQUEUE, (mine["recipient"], None, memories["theirs"], Jsonb({"body": "hi"})))


@pytest.mark.parametrize("argument", ["recipient", "group", "update"])
def test_another_owners_id_and_a_missing_one_get_the_same_answer(
    db: psycopg.Connection[Any], argument: str
) -> None:
    """Otherwise the error tells an end user which of other tenants' ids exist."""
    mine, theirs = add_recipient(db), add_recipient(db, name="Bo")
    their_update = db.execute(
        "insert into memories (group_id, title) values (%s, 't') returning id", (theirs["group"],)
    ).fetchone()["id"]  # type: ignore[index]
    existing = {"recipient": theirs["recipient"], "group": theirs["group"],
                "update": str(their_update)}[argument]  # fmt: skip
    answers = []
    for target in (existing, str(uuid.uuid4())):
        args = {"recipient": mine["recipient"], "group": None, "update": None, argument: target}
        claims = {"role": "authenticated", "sub": mine["owner"]}
        with (
            session(db, "authenticated", claims),
            pytest.raises(psycopg.errors.InsufficientPrivilege) as refused,
        ):
            db.execute(
                ENQUEUE, (args["recipient"], args["group"], args["update"], Jsonb({"body": "hi"}))
            )
        answers.append(str(refused.value).replace(target, "<id>"))
    assert answers[0] == answers[1]
