"""The cache tier against a real Redis and PostgreSQL, on committed data."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pytest
import redis
from flask import Flask
from sqlalchemy import select, text

from app.extensions import db
from app.models import Post
from devstack.servers import Postgres, Redis
from tests.cache.conftest import StatementLog
from tests.conftest import REPO, SECRET

FEED = "/api/v1/feed?limit=5"


def top_post(app: Flask) -> Post:
    with app.app_context():
        post = db.session.execute(
            select(Post).where(Post.status == "published", Post.deleted_at.is_(None))
            .order_by(Post.published_at.desc(), Post.id.desc()).limit(1)
        ).scalar_one()  # fmt: skip
        db.session.expunge(post)
        return post


def retitle(app: Flask, post_id: int, title: str) -> None:
    """An edit committed through the ORM session, as the write endpoints do."""
    with app.app_context():
        db.session.get(Post, post_id).title = title
        db.session.commit()


def first_title(app: Flask, url: str = FEED) -> str:
    response = app.test_client().get(url)
    assert response.status_code == 200
    return response.get_json()["data"][0]["title"]


def test_hit_serves_identical_bytes_with_zero_sql(cached_app: Flask, sql: StatementLog) -> None:
    client = cached_app.test_client()
    first = client.get(FEED)
    sql.clear()
    second = client.get(FEED)
    assert sql == []
    assert second.data == first.data and second.headers["ETag"] == first.headers["ETag"]
    assert second.headers["Link"] == first.headers["Link"]
    assert second.headers["Vary"] == "Accept-Encoding"
    assert "s-maxage=" in second.headers["Cache-Control"] and "stale-if-error=" in second.headers["Cache-Control"]


def test_conditional_get_is_304_with_zero_sql_and_same_validators(cached_app: Flask, sql: StatementLog) -> None:
    client = cached_app.test_client()
    first = client.get(FEED)
    sql.clear()
    again = client.get(FEED, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    assert sql == []
    for header in ("ETag", "Cache-Control", "Vary"):
        assert again.headers[header] == first.headers[header]
    since = client.get(FEED, headers={"If-Modified-Since": first.headers["Last-Modified"]})
    assert since.status_code == 304


def test_an_edit_changes_the_etag_and_the_next_read(cached_app: Flask) -> None:
    client = cached_app.test_client()
    post = top_post(cached_app)
    etag = client.get(FEED).headers["ETag"]
    retitle(cached_app, post.id, "Edited title")
    assert client.get(FEED, headers={"If-None-Match": etag}).status_code == 200
    assert first_title(cached_app) == "Edited title"
    detail = client.get(f"/api/v1/posts/{post.id}").get_json()
    assert detail["title"] == "Edited title"


@pytest.mark.slow  # ~5 s: two Python processes importing the app
def test_write_is_visible_at_once_to_another_process(cached_app: Flask, redis_server: Redis, cache_db: str) -> None:
    post = top_post(cached_app)
    script = (
        "import sys; from tests.conftest import build_app\n"
        f"app = build_app({cache_db!r}, REDIS_URL={redis_server.url!r})\n"
        "print(app.test_client().get(sys.argv[1]).get_json()['data'][0]['title'])\n"
    )
    other = lambda: subprocess.run(  # noqa: E731
        [sys.executable, "-c", script, FEED], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert other() == post.title  # the other process fills the shared cache
    retitle(cached_app, post.id, "Seen everywhere")
    assert other() == "Seen everywhere"


def test_rollback_leaves_the_cache_alone(cached_app: Flask, sql: StatementLog) -> None:
    client = cached_app.test_client()
    etag = client.get(FEED).headers["ETag"]
    post = top_post(cached_app)
    with cached_app.app_context():
        db.session.get(Post, post.id).title = "Never committed"
        db.session.flush()
        db.session.rollback()
        assert db.session.execute(text("SELECT count(*) FROM cache_outbox")).scalar() == 0
    sql.clear()
    assert client.get(FEED, headers={"If-None-Match": etag}).status_code == 304
    assert sql == []


def test_reader_racing_a_writer_cannot_store_the_old_page_under_the_new_generation(
    cached_app: Flask, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    import app.api.feeds as feeds

    post = top_post(cached_app)
    read_done, write_done = threading.Event(), threading.Event()
    original = feeds.feed_page

    def slow_feed_page(*args, **kwargs):  # type: ignore[no-untyped-def]
        page = original(*args, **kwargs)  # reads the pre-write rows...
        read_done.set()
        write_done.wait(10)  # ...and stores them only after the writer committed
        return page

    monkeypatch.setattr(feeds, "feed_page", slow_feed_page)
    results: list[str] = []
    reader = threading.Thread(target=lambda: results.append(first_title(cached_app)))
    reader.start()
    assert read_done.wait(10)
    retitle(cached_app, post.id, "Written during the read")
    write_done.set()
    reader.join(10)
    assert results == [post.title]  # the racing reader saw the old row, as it may
    monkeypatch.setattr(feeds, "feed_page", original)
    assert first_title(cached_app) == "Written during the read"


def test_hundred_concurrent_misses_run_the_page_query_once(cached_app: Flask, sql: StatementLog) -> None:
    cached_app.test_client().get("/api/v1/feed?limit=1")  # outbox drain and connections warmed
    sql.clear()
    barrier = threading.Barrier(100)
    statuses: list[int] = []

    def read() -> None:
        client = cached_app.test_client()
        barrier.wait()
        statuses.append(client.get("/api/v1/feed?limit=50").status_code)

    threads = [threading.Thread(target=read) for _ in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert statuses == [200] * 100
    assert len(sql.pages()) == 1


def test_keys_are_normalized_and_unknown_parameters_store_nothing(
    cached_app: Flask, sql: StatementLog, redis_client: redis.Redis
) -> None:
    client = cached_app.test_client()
    client.get("/api/v1/feed")
    sql.clear()
    assert client.get("/api/v1/feed?limit=20").status_code == 200
    assert sql == []  # same page as the default limit: one key
    keys = redis_client.dbsize()
    assert client.get("/api/v1/feed?limit=20&utm_source=x").status_code == 400
    assert client.get("/api/v1/feed?cursor=forged").status_code == 400
    assert redis_client.dbsize() == keys


def test_404_is_cached_briefly_and_cleared_by_a_publish(cached_app: Flask, sql: StatementLog) -> None:
    client = cached_app.test_client()
    with cached_app.app_context():
        draft = db.session.execute(select(Post).where(Post.status == "draft").limit(1)).scalar_one()
        draft_id = draft.id
    assert client.get(f"/api/v1/posts/{draft_id}").status_code == 404
    sql.clear()
    cached = client.get(f"/api/v1/posts/{draft_id}")
    assert cached.status_code == 404 and cached.mimetype == "application/problem+json"
    assert sql == []
    with cached_app.app_context():
        post = db.session.get(Post, draft_id)
        post.status, post.published_at = "published", datetime.now(UTC)
        db.session.commit()
    assert client.get(f"/api/v1/posts/{draft_id}").status_code == 200


def test_redis_down_reads_and_writes_work_and_nothing_is_stale_after(cached_app: Flask, redis_server: Redis) -> None:
    post = top_post(cached_app)
    assert first_title(cached_app) == post.title  # warm
    redis_server.pause()  # hung, with its data: the worst case for staleness
    try:
        retitle(cached_app, post.id, "Written while Redis hung")  # 2xx-equivalent: commit succeeded
        for _ in range(5):
            assert first_title(cached_app) == "Written while Redis hung"  # from the database
        with cached_app.app_context():
            assert db.session.execute(text("SELECT count(*) FROM cache_outbox")).scalar() == 1
    finally:
        redis_server.resume()
    time.sleep(0.3)  # breaker cool-down
    assert first_title(cached_app) == "Written while Redis hung"  # the outbox was drained first
    with cached_app.app_context():
        assert db.session.execute(text("SELECT count(*) FROM cache_outbox")).scalar() == 0


def test_redis_stopped_then_back_empty(cached_app: Flask, redis_server: Redis) -> None:
    post = top_post(cached_app)
    first_title(cached_app)
    redis_server.stop()
    retitle(cached_app, post.id, "Written while Redis was down")
    assert first_title(cached_app) == "Written while Redis was down"
    redis_server.restart()
    time.sleep(0.3)
    assert first_title(cached_app) == "Written while Redis was down"


def test_database_down_serves_cached_pages_stale_and_503_otherwise(
    cache_db: str, redis_server: Redis, redis_client: redis.Redis, pg_server: Postgres | None, app: Flask
) -> None:
    from tests.conftest import build_app

    if pg_server is None:
        pytest.skip("needs the throwaway PostgreSQL server (TEST_DATABASE_URL given)")
    session_app = app  # other tests' app: its pooled connections die with the server
    app = build_app(cache_db, REDIS_URL=redis_server.url, CACHE_TTL_FEED=0.05)
    client = app.test_client()
    warm = client.get(FEED)
    assert warm.status_code == 200
    time.sleep(0.1)  # the entry is now stale (kept for stale-if-error)
    pg_server.stop()
    try:
        stale = client.get(FEED)
        assert stale.status_code == 200 and stale.data == warm.data
        assert int(stale.headers["Age"]) >= 0
        cold = client.get("/api/v1/feed?limit=6")
        assert cold.status_code == 503 and cold.headers["Retry-After"]
        assert cold.get_json()["code"] == "unavailable"
    finally:
        pg_server.restart()
        for each in (app, session_app):
            with each.app_context():
                db.engine.dispose()
    assert client.get("/api/v1/feed?limit=6").status_code == 200  # the 503 was not cached
    assert SECRET


def test_hung_redis_costs_a_few_timeouts_then_nothing(cached_app: Flask, redis_server: Redis) -> None:
    """Redis slow past its timeout is Redis down: the breaker opens after CACHE_BREAKER_THRESHOLD
    timed-out calls, and until the cool-down ends reads go straight to the database. Counted as
    Redis timeouts (the cache-errors metric), not as wall time: a busy machine makes every
    request slow, a hung Redis must not make more of them wait on it."""
    from app.observability.metrics import REGISTRY

    def timeouts() -> float:
        return REGISTRY.get_sample_value("readwire_cache_errors_total", {"error": "TimeoutError"}) or 0.0

    client = cached_app.test_client()
    body = client.get(FEED).get_data()
    time.sleep(cached_app.config["CACHE_NEAR_TRUST"])  # make every read ask Redis
    before = timeouts()
    redis_server.pause()
    started = time.monotonic()
    try:
        for _ in range(30):
            response = client.get(FEED)
            assert response.status_code == 200 and response.get_data() == body
    finally:
        elapsed = time.monotonic() - started
        redis_server.resume()
    waited = timeouts() - before
    # One trial call per cool-down after the breaker opens (the loop may outlast a cool-down).
    trials = int(elapsed / cached_app.config["CACHE_BREAKER_COOLDOWN"]) + 1
    assert 1 <= waited <= cached_app.config["CACHE_BREAKER_THRESHOLD"] + trials, (waited, elapsed)
