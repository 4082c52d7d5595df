"""app/services/statements.py: a feed page runs as a statement psycopg prepares on first use."""

from __future__ import annotations

from flask import Flask
from sqlalchemy.engine import Connection

from app.extensions import db
from app.pagination import TOP
from app.services.posts import FeedScope, _feed_statement, feed_page
from app.services.statements import prepared_rows


def _prepared_names(conn: Connection) -> set[str]:
    rows = conn.exec_driver_sql("SELECT statement FROM pg_prepared_statements").fetchall()
    return {row[0] for row in rows}


def test_the_page_statement_is_prepared_on_its_first_run(app: Flask, db_tx: Connection) -> None:
    """psycopg prepares a statement only after 5 runs on one connection by default; with a pool
    of connections taking turns, most pages were planned by PostgreSQL every time."""
    statement = _feed_statement("postgresql", "all", "next")
    params = {"position": TOP[0], "item_id": TOP[1], "row_limit": 3, "scope_id": 0}
    with app.test_request_context("/api/v1/feed"):
        raw = db.session.connection().connection.driver_connection
        raw.execute("DEALLOCATE ALL")  # earlier tests' statements (psycopg forgets them too)
        assert _prepared_names(db_tx) == set()
        rows = prepared_rows(statement, params)
        assert len(rows) == 3 and isinstance(rows[0], tuple)
        (prepared,) = _prepared_names(db_tx)  # one run: prepared
        assert "FROM posts JOIN authors" in prepared
        prepared_rows(statement, params)
        assert _prepared_names(db_tx) == {prepared}  # reused, not prepared again


def test_feed_page_counts_as_one_statement(app: Flask, statements: list[str]) -> None:
    with app.test_request_context("/api/v1/feed"):
        page = feed_page(FeedScope("all"), None, 5)
    assert len(page.items) == 5 and all(isinstance(item["tags"], list) for item in page.items)
    sent = [s for s in statements if "SAVEPOINT" not in s]  # the test harness's own
    assert len(sent) == 1 and sent[0].startswith("SELECT posts.id")
