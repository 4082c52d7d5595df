"""The cached read path against the database path and against serving bytes, in one run.

All go through the Flask test client (WSGI in-process: no sockets, so the numbers are the
application's own cost plus its Redis round trips):
- bare: a view that returns the very bytes of the feed page (the floor: Flask + Werkzeug);
- hit: GET /api/v1/feed with the page in Redis;
- not_modified: the same with If-None-Match (no SQL, no body);
- miss: the page's generation is bumped before each round, so every call is a real miss
  (feed query + tags query on PostgreSQL, render, store under the single-flight lock).
"""

from __future__ import annotations

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from app.cache.keys import generation_key

FEED = "/api/v1/feed"


@pytest.fixture(scope="module")
def page_bytes(app: Flask) -> bytes:
    response = app.test_client().get(FEED)
    assert response.status_code == 200
    app.config["BARE_BODY"] = body = response.get_data()
    return body


def test_bare_view(benchmark, client: FlaskClient, page_bytes: bytes) -> None:  # type: ignore[no-untyped-def]
    response = benchmark(client.get, "/bench/bare")
    assert response.get_data() == page_bytes


def test_feed_cache_hit(benchmark, client: FlaskClient, page_bytes: bytes) -> None:  # type: ignore[no-untyped-def]
    client.get(FEED)
    response = benchmark(client.get, FEED)
    assert response.status_code == 200
    assert response.get_data() == page_bytes


def test_feed_not_modified(benchmark, client: FlaskClient, page_bytes: bytes) -> None:  # type: ignore[no-untyped-def]
    etag = client.get(FEED).headers["ETag"]
    response = benchmark(client.get, FEED, headers={"If-None-Match": etag})
    assert response.status_code == 304


def test_feed_cache_miss(benchmark, client: FlaskClient, page_bytes: bytes, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    store = redis.Redis.from_url(redis_url)

    def bump() -> None:
        store.incr(generation_key("feed"))
        store.ping()  # the writers' barrier: the near counters have seen the INCR

    response = benchmark.pedantic(client.get, args=(FEED,), setup=bump, rounds=300, warmup_rounds=10)
    assert response.status_code == 200
    assert response.get_data() == page_bytes
