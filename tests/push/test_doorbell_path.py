"""What a write waits for between its COMMIT and its doorbell (issue 13). Every round trip there is a
wait during which a gevent worker runs its other greenlets first: in the streamers scenario the late
writes, late at every stream together, spent most of that time on other greenlets' CPU. So the doorbell
follows the COMMIT after the commit's WAL position (one statement in autocommit) and the generations'
bump only (the events must not reach a client before the pages they announce are invalidated); the
outbox rows are deleted after it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from psycopg.pq import TransactionStatus
from sqlalchemy import event, text

from app.extensions import db, invalidation, push
from tests.push.conftest import a_category, an_author, create


def _record_round_trips(app: Flask, seen: list[str]) -> Callable[[], None]:
    """Appends to `seen`, in order, every round trip to PostgreSQL (BEGIN, each statement's first words,
    COMMIT: the ones psycopg really sends, none in autocommit), the bump and the doorbell."""
    with app.app_context():
        engine = db.engine

    def statement(conn: Any, cursor: Any, sql: str, *_: Any) -> None:
        driver = conn.connection.driver_connection
        if not driver.autocommit and driver.info.transaction_status == TransactionStatus.IDLE:
            seen.append("BEGIN")
        seen.append(" ".join(sql.split()[:4]))

    def commit(conn: Any) -> None:
        if conn.connection.driver_connection.info.transaction_status != TransactionStatus.IDLE:
            seen.append("COMMIT")

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)

    def stop() -> None:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "commit", commit)

    return stop


def test_the_doorbell_follows_the_commit_after_the_wal_position_and_the_bump_only(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    author, category = an_author(app), a_category(app)
    seen: list[str] = []
    store = invalidation.invalidator(app).store
    assert store is not None
    incr, ring = store.incr, push.state(app).publisher._ring_others

    def bump(*args: Any, **kwargs: Any) -> bool:
        seen.append("bump")
        return incr(*args, **kwargs)

    def doorbell(*args: Any) -> str:
        seen.append("doorbell")
        return ring(*args)

    monkeypatch.setattr(store, "incr", bump)
    monkeypatch.setattr(push.state(app).publisher, "_ring_others", doorbell)
    stop = _record_round_trips(app, seen)
    try:
        create(app, author, "Rung after the bump", category)
    finally:
        stop()
    events = next(i for i, step in enumerate(seen) if step.startswith("INSERT INTO post_events"))
    committed = seen.index("COMMIT", events)
    rung = seen.index("doorbell", committed)
    assert seen[committed + 1 : rung] == ["SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint", "bump"]
    assert any(step.startswith("DELETE FROM cache_outbox") for step in seen[rung:]), seen[rung:]
    with app.app_context():
        assert db.session.execute(text("SELECT count(*) FROM cache_outbox")).scalar() == 0
        db.session.remove()
