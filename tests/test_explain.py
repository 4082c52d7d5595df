"""The planner really uses the feed indexes, on 60k posts, first page and deep in the walk.

Each statement a feed request sends is captured and EXPLAINed twice: as sent (a custom plan
for these parameter values) and as a prepared statement under force_generic_plan, which is
what psycopg's automatic server-side prepare leads to after a few executions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from flask import Flask
from sqlalchemy import event, text

from app.extensions import cursors, db
from app.services.posts import FeedScope
from tests.conftest import build_app, cold_cache, migrate_and_seed

pytestmark = pytest.mark.slow

POSTS = 60_000
BIG_TABLES = {"posts", "post_tags", "comments"}


@pytest.fixture(scope="module")
def big_app(make_database) -> Iterator[tuple[Flask, str]]:  # type: ignore[no-untyped-def]
    url = make_database("readwire_explain")
    application = build_app(url)
    migrate_and_seed(application, POSTS, seed=11)
    yield application, url


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def explain(dsn: str, statement: str, params: dict[str, Any], generic: bool) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        if not generic:
            return conn.execute("EXPLAIN (FORMAT JSON) " + statement, params).fetchone()[0][0]["Plan"]
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            names.append(match.group(1))
            return f"${len(names)}"

        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("PREPARE q AS " + re.sub(r"%\((\w+)\)s", number, statement))
        client = psycopg.ClientCursor(conn)
        args = ", ".join(["%s"] * len(names))
        client.execute(f"EXPLAIN (FORMAT JSON) EXECUTE q({args})", [params[n] for n in names])
        return client.fetchone()[0][0]["Plan"]


def feeds(application: Flask) -> list[tuple[str, FeedScope, set[str], str]]:
    """(url, scope, acceptable page indexes) for the global feed and, per scoped kind, its
    busiest and its rarest scope.

    For a scope holding a third of all posts the planner may rightly walk the global index
    and filter (about three rows read per row kept, and the global index follows the heap
    order); for a rare scope that would read most of the table, so the scoped index is required.
    """
    cases: list[tuple[str, FeedScope, set[str], str]] = [("/api/v1/feed", FeedScope("all"), {"ix_posts_feed"}, "all")]
    kinds = [
        ("category", "categories", "slug", "/api/v1/categories/{}/feed", "ix_posts_category_feed"),
        ("tag", "tags", "slug", "/api/v1/tags/{}/feed", "ix_post_tags_tag_feed"),
        ("author", "authors", "username", "/api/v1/authors/{}/feed", "ix_posts_author_feed"),
    ]
    with application.app_context():
        for kind, table, key, url, index in kinds:
            for order, allowed in (("DESC", {index, "ix_posts_feed"}), ("ASC", {index})):
                sql = f"SELECT id, {key} FROM {table} WHERE post_count >= 600 ORDER BY post_count {order} LIMIT 1"
                scope_id, name = db.session.execute(text(sql)).one()
                allowed = allowed if kind != "tag" else {index}
                cases.append((url.format(name), FeedScope(kind, scope_id), allowed, f"{kind}:{name}"))  # type: ignore[arg-type]
    return cases


def deep_cursor(application: Flask, scope: FeedScope, cursor_scope: str, direction: str) -> str:
    """A cursor 90% of the way down the feed (the test may use OFFSET; the app never does)."""
    where = {
        "all": "TRUE",
        "category": f"category_id = {scope.id}",
        "author": f"author_id = {scope.id}",
        "tag": f"id IN (SELECT post_id FROM post_tags WHERE tag_id = {scope.id})",
    }[scope.kind]
    visible = f"status = 'published' AND deleted_at IS NULL AND {where}"
    with application.test_request_context():
        total = db.session.execute(text(f"SELECT count(*) FROM posts WHERE {visible}")).scalar_one()
        published_at, post_id = db.session.execute(
            text(
                f"SELECT published_at, id FROM posts WHERE {visible} ORDER BY published_at DESC, id DESC OFFSET :n LIMIT 1"
            ),
            {"n": int(total * 0.9)},
        ).one()
        assert total >= 600
        return cursors.codec().encode(cursor_scope, direction, published_at, post_id)  # type: ignore[arg-type]


def captured_statements(application: Flask, url: str) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if not executemany:  # the snapshot's rank inserts are not reads
            seen.append((statement, dict(parameters)))

    with application.app_context():
        engine = db.engine
    cold_cache(application)  # measure the database path
    event.listen(engine, "before_cursor_execute", record)
    try:
        response = application.test_client().get(url)
        assert response.status_code == 200, response.data[:200]
        assert response.get_json()["data"], url
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
@pytest.mark.parametrize("where", ["first-page", "deep-next", "deep-prev"])
def test_feed_statements_use_the_feed_indexes(big_app: tuple[Flask, str], where: str, generic: bool) -> None:
    application, url = big_app
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    for path, scope, indexes, cursor_scope in feeds(application):
        query = "?limit=20"
        if where != "first-page":
            query += "&cursor=" + deep_cursor(application, scope, cursor_scope, where.removeprefix("deep-"))
        statements = captured_statements(application, path + query)
        page_sql = [(s, p) for s, p in statements if "LIMIT" in s and "comment_count" in s]
        assert len(page_sql) == 1, statements
        for statement, params in statements:
            plan = list(nodes(explain(dsn, statement, params, generic)))
            seq_scans = [n["Relation Name"] for n in plan if n["Node Type"] == "Seq Scan"]
            assert not BIG_TABLES & set(seq_scans), (path, where, statement, seq_scans)
            if (statement, params) == page_sql[0]:
                assert indexes & {n.get("Index Name") for n in plan}, (path, where, plan)
                sorts = [n for n in plan if "Sort" in n["Node Type"]]
                assert not sorts, (path, where, "the page must come off the index in order")


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
def test_popular_statements_use_their_indexes(big_app: tuple[Flask, str], generic: bool) -> None:
    """Computing a snapshot reads the newest candidates off ix_posts_feed with no sort; a page
    deep in the ranking is a primary-key range of popular_ranks joined to posts by id."""
    application, url = big_app
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with application.app_context():
        db.session.execute(text("DELETE FROM popular_snapshots"))  # so this request computes one
        db.session.commit()
    first = captured_statements(application, "/api/v1/popular?limit=20")
    candidates = [(s, p) for s, p in first if s.lstrip().startswith("SELECT posts.id, posts.published_at")]
    assert len(candidates) == 1, first
    plan = list(nodes(explain(dsn, *candidates[0], generic)))
    assert "ix_posts_feed" in {n.get("Index Name") for n in plan} and not [n for n in plan if "Sort" in n["Node Type"]]
    with application.app_context():
        snapshot, deep_rank = db.session.execute(
            text("SELECT snapshot_id, max(rank) * 9 / 10 FROM popular_ranks GROUP BY 1 ORDER BY 1 DESC LIMIT 1")
        ).one()
        cursor = cursors.codec().encode("popular", "next", datetime.fromtimestamp(snapshot, UTC), deep_rank)
    statements = captured_statements(application, f"/api/v1/popular?limit=20&cursor={cursor}")
    page_sql = [(s, p) for s, p in statements if "popular_ranks.rank" in s and "LIMIT" in s]
    assert len(page_sql) == 1, [s for s, _ in statements]
    for statement, params in statements:
        plan = list(nodes(explain(dsn, statement, params, generic)))
        seq_scans = [n["Relation Name"] for n in plan if n["Node Type"] == "Seq Scan"]
        assert not (BIG_TABLES | {"popular_ranks"}) & set(seq_scans), (statement, seq_scans)
        if (statement, params) == page_sql[0]:
            # The range is found through the primary key; the planner may then sort the few
            # rows it found (a snapshot holds at most POPULAR_SIZE ranks) rather than walk it.
            assert "pk_popular_ranks" in {n.get("Index Name") for n in plan}, plan


def test_feed_pages_are_planned_once_per_connection(big_app: tuple[Flask, str]) -> None:
    """DB_PLAN_CACHE_MODE (force_generic_plan by default): a feed page's prepared statement is
    planned once per connection and the plan kept, not re-planned at every execution (under
    `auto` the LIMIT parameter made every plan a custom one; app/config.py)."""
    from app.replicas import read_only
    from app.services.posts import feed_page

    application, _ = big_app
    with application.test_request_context(), read_only():
        db.session.connection()  # the reads below then share the session's connection
        for limit in (5, 20, 50, 20):
            assert feed_page(FeedScope("all"), None, limit).items
        plans = db.session.execute(
            text(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE '%comment_count%'"
            )
        ).all()
        assert db.session.execute(text("SHOW plan_cache_mode")).scalar_one() == "force_generic_plan"
    assert plans == [(4, 0)], plans  # (generic, custom) executions; under `auto`: [(0, 4)]
