"""Page fills read without a transaction (issue 11): no BEGIN before a miss's statements and no
ROLLBACK after them; anything that may write keeps its transaction (app/replicas.py:read_only)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, text

from app.extensions import db


@pytest.fixture
def autocommit_log(cached_app: Flask) -> Iterator[list[tuple[str, bool]]]:
    """(statement, whether its connection was in autocommit mode) for every statement the app runs."""
    seen: list[tuple[str, bool]] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append((statement, bool(conn.connection.dbapi_connection.autocommit)))

    with cached_app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_misses_read_on_autocommit_connections(cached_app: Flask, autocommit_log: list[tuple[str, bool]]) -> None:
    client = cached_app.test_client()
    feed = client.get("/api/v1/feed?limit=5").get_json()["data"]
    post, tag = feed[0], next(item["tags"][0] for item in feed if item["tags"])
    urls = [
        "/api/v1/feed?limit=3",
        f"/api/v1/tags/{tag['slug']}/feed",
        f"/api/v1/authors/{post['author']['username']}/feed",
        f"/api/v1/categories/{post['category']['slug']}/feed",
        f"/api/v1/posts/{post['id']}",
        f"/api/v1/posts?ids={post['id']},{feed[1]['id']}",
        f"/api/v1/posts/{post['id']}/comments",
        "/api/v1/categories",
        "/api/v1/tags",
        "/api/v1/categories/no-such-category/feed",  # a 404 is a fill too
    ]
    autocommit_log.clear()
    for url in urls:
        response = client.get(url)
        assert response.headers["X-App-Cache"] == "miss", url
    assert autocommit_log, "the misses ran no statement: the test proves nothing"
    in_transaction = [statement for statement, autocommit in autocommit_log if not autocommit]
    assert not in_transaction, f"read in a transaction: {in_transaction}"


def test_the_connection_goes_back_to_the_pool_transactional(
    cached_app: Flask, autocommit_log: list[tuple[str, bool]]
) -> None:
    """A read-only fill does not leave its connection in autocommit mode for the next user (a
    write must get its transaction), and work outside a fill keeps its transaction."""
    client = cached_app.test_client()
    assert client.get("/api/v1/feed?limit=4").headers["X-App-Cache"] == "miss"
    with cached_app.app_context():
        db.session.execute(text("SELECT 1"))
        in_transaction = db.session.connection().connection.dbapi_connection.info.transaction_status
        db.session.rollback()
    assert autocommit_log[-1] == ("SELECT 1", False)
    assert in_transaction != 0  # psycopg's TransactionStatus.IDLE: the SELECT opened a transaction


def test_popular_keeps_its_transaction(cached_app: Flask, autocommit_log: list[tuple[str, bool]]) -> None:
    """/popular may write its snapshot before reading it: not read-only."""
    client = cached_app.test_client()
    assert client.get("/api/v1/popular?limit=3").status_code == 200
    assert autocommit_log and not any(autocommit for _, autocommit in autocommit_log)


def test_a_page_read_takes_its_own_connection_not_the_session(cached_app: Flask) -> None:
    """A miss's page statement checks a connection out for itself: no session transaction is
    begun around it (app/replicas.py: sessionless_read, 192 -> 72 us of CPU per read)."""
    from app.replicas import RoutingSession

    begun: list[Any] = []

    def record(session: Any, transaction: Any, connection: Any) -> None:
        begun.append(connection)

    event.listen(RoutingSession, "after_begin", record)
    try:
        response = cached_app.test_client().get("/api/v1/feed?limit=6")
    finally:
        event.remove(RoutingSession, "after_begin", record)
    assert response.headers["X-App-Cache"] == "miss" and response.get_json()["data"]
    assert begun == []


def test_a_session_that_has_written_reads_its_own_uncommitted_changes(cached_app: Flask) -> None:
    """After the session has flushed changes the page statement goes through its connection,
    so it sees what that transaction changed (a connection of its own would not)."""
    from app.models import Post
    from app.replicas import read_only
    from app.services.posts import FeedScope, feed_page

    with cached_app.test_request_context():
        with read_only():
            newest = feed_page(FeedScope("all"), None, 1).items[0]
        post = db.session.get(Post, newest["id"])
        assert post is not None
        post.title = "uncommitted"
        db.session.flush()  # written in this transaction: RoutingSession keeps reads on it
        try:
            with read_only():
                seen = feed_page(FeedScope("all"), None, 1).items[0]
        finally:
            db.session.rollback()
    assert seen["id"] == newest["id"] and seen["title"] == "uncommitted"
