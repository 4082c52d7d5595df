"""Issue 13's "done when": with no writes, a client polling a feed every 5 s for 5 minutes gets
only 304s after its first 200. On the real Redis and PostgreSQL, near cache on, in compressed
time: every lifetime the cache uses (fresh TTL, stale TTL, lock) and the poll interval are
divided by the same factor, so the cache re-renders the pages as often, relative to the polls,
as it would in real time."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from flask import Flask
from sqlalchemy import event, text

from app.extensions import db, page_cache
from devstack.servers import Redis
from tests.cache.conftest import CACHE_CONFIG
from tests.conftest import build_app

SCALE = 100  # 5 minutes run in 3 s
POLL_INTERVAL = 5.0 / SCALE
DURATION = 300.0 / SCALE
POLLS = 60  # 5 minutes at one poll every 5 s
EMPTY_CATEGORY = "nothing-here-yet"
FEEDS = (
    "/api/v1/feed",
    "/api/v1/feed.json",
    "/api/v1/feed.atom",
    f"/api/v1/categories/{EMPTY_CATEGORY}/feed.atom",  # an empty page has no newest item to date it by
    f"/api/v1/categories/{EMPTY_CATEGORY}/feed",
)


@pytest.fixture
def polled_app(cache_db: str, redis_server: Redis, redis_client: redis.Redis) -> Iterator[Flask]:
    app = build_app(
        cache_db,
        REDIS_URL=redis_server.url,
        **CACHE_CONFIG,
        CACHE_TTL_FEED=30.0 / SCALE,
        CACHE_STALE_TTL=600.0 / SCALE,
        CACHE_NEGATIVE_TTL=5.0 / SCALE,
        CACHE_LOCK_TTL=2.0 / SCALE,
    )
    with app.app_context():
        db.session.execute(
            text("INSERT INTO categories (slug, name, post_count) VALUES (:slug, 'Empty', 0) ON CONFLICT DO NOTHING"),
            {"slug": EMPTY_CATEGORY},
        )
        db.session.commit()
    yield app
    page_cache.pages(app).wait_for_refreshes()
    with app.app_context():
        db.engine.dispose()


@pytest.mark.parametrize("validator", ["If-None-Match", "If-Modified-Since"])
def test_a_poller_every_5_s_for_5_minutes_gets_only_304s_after_the_first_200(polled_app: Flask, validator: str) -> None:
    renders: Counter[str] = Counter()

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "LIMIT" in statement:  # a feed page query: the page is being re-rendered
            renders["pages"] += 1

    with polled_app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        client = polled_app.test_client()
        first = {url: client.get(url) for url in FEEDS}
        assert {url: r.status_code for url, r in first.items()} == dict.fromkeys(FEEDS, 200)
        header = {"If-None-Match": "ETag", "If-Modified-Since": "Last-Modified"}[validator]
        sent = {url: {validator: r.headers[header]} for url, r in first.items()}
        answers: dict[str, Counter[int]] = {url: Counter() for url in FEEDS}
        renders.clear()
        started = time.monotonic()
        # A fixed number of polls, not a deadline: on a busy machine a round of polls may take
        # longer than the interval, which only stretches the run (more re-renders, a harder test).
        for poll in range(POLLS):
            next_poll = time.monotonic() + POLL_INTERVAL
            for url in FEEDS:
                response = client.get(url, headers=sent[url])
                answers[url][response.status_code] += 1
                if response.status_code != 304:
                    pytest.fail(f"poll {poll} of {url}: {response.status_code} {response.headers}")
            time.sleep(max(0.0, next_poll - time.monotonic()))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert time.monotonic() - started >= DURATION * 0.95
    assert answers == {url: Counter({304: POLLS}) for url in FEEDS}
    # The pages really were re-rendered while the polls went on (else this proves nothing):
    # each fresh TTL (0.3 s here, 30 s in real time) that passed re-ran every page's query.
    assert renders["pages"] >= 3 * len(FEEDS), renders
