"""The page cache's protocol on a real Redis and PostgreSQL: validators from content, a stale
refresh that never makes its request wait, two round trips per miss, and misses that collapse
per process while Redis is away."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask
from redis.connection import Connection

from app.cache.keys import generation_key
from app.extensions import page_cache
from devstack.servers import free_port
from tests.cache.conftest import StatementLog
from tests.cache.test_cache import FEED, retitle, top_post


def bump(redis_client: redis.Redis, namespace: str) -> None:
    """A generation bump with no change behind it (what an unrelated write does to a page)."""
    redis_client.incr(generation_key(namespace))
    redis_client.ping()  # the writers' barrier: every near counter has seen it


def test_a_refresh_with_the_same_bytes_keeps_etag_and_last_modified(make_app: Callable[..., Flask]) -> None:
    app = make_app(CACHE_TTL_FEED=0.2, CACHE_NEAR_BYTES=0)
    client = app.test_client()
    first = client.get(FEED)
    time.sleep(1.1)  # past the TTL, and into another second: a new render time would show
    stale = client.get(FEED)
    assert stale.headers["X-App-Cache"] == "refresh" and stale.data == first.data
    assert page_cache.pages(app).wait_for_refreshes()
    again = client.get(FEED)
    assert again.headers["X-App-Cache"] == "hit"
    assert again.headers["ETag"] == first.headers["ETag"]
    assert again.headers["Last-Modified"] == first.headers["Last-Modified"]
    assert client.get(FEED, headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    assert client.get(FEED, headers={"If-Modified-Since": first.headers["Last-Modified"]}).status_code == 304


def test_a_generation_bump_that_changes_nothing_keeps_the_validators(
    cached_app: Flask, redis_client: redis.Redis, sql: StatementLog
) -> None:
    client = cached_app.test_client()
    first = client.get(FEED)
    time.sleep(1.1)
    bump(redis_client, "feed")
    sql.clear()
    again = client.get(FEED)
    assert sql.pages(), "the bump must force a re-render (else this test proves nothing)"
    assert again.headers["X-App-Cache"] == "miss" and again.data == first.data
    assert again.headers["ETag"] == first.headers["ETag"]
    assert again.headers["Last-Modified"] == first.headers["Last-Modified"]


def test_a_change_changes_both_validators(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    client = app.test_client()
    first = client.get(FEED)
    time.sleep(1.1)
    retitle(app, top_post(app).id, "A real change")
    changed = client.get(FEED, headers={"If-None-Match": first.headers["ETag"]})
    assert changed.status_code == 200 and b"A real change" in changed.data
    assert changed.headers["ETag"] != first.headers["ETag"]
    assert changed.headers["Last-Modified"] != first.headers["Last-Modified"]


def test_the_request_that_takes_the_refresh_serves_stale_at_once(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.api.feeds as feeds

    app = make_app(CACHE_TTL_FEED=0.05, CACHE_NEAR_BYTES=0, CACHE_LOCK_TTL=5.0)
    client = app.test_client()
    warm = client.get(FEED)
    original = feeds.feed_page
    release = threading.Event()

    def slow_feed_page(*args: Any, **kwargs: Any) -> Any:
        release.wait(10)
        return original(*args, **kwargs)

    monkeypatch.setattr(feeds, "feed_page", slow_feed_page)
    time.sleep(0.1)
    started = time.perf_counter()
    stale = client.get(FEED)
    waited = time.perf_counter() - started
    assert stale.headers["X-App-Cache"] == "refresh" and stale.data == warm.data and "Age" in stale.headers
    assert waited < 5, waited  # the refresh is blocked until released: the request did not wait for it
    assert client.get(FEED).headers["X-App-Cache"] == "stale"  # refresh in flight elsewhere
    release.set()
    assert page_cache.pages(app).wait_for_refreshes()
    assert client.get(FEED).headers["X-App-Cache"] == "hit"


class RoundTrips:
    """Counts requests sent to Redis (a pipeline is one). The near counters send none while they
    are trusted and nothing changes, so every count is the page cache's."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = Connection.send_packed_command

        def counting(conn: Connection, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(conn, *args, **kwargs)

        monkeypatch.setattr(Connection, "send_packed_command", counting)


def test_a_miss_costs_two_round_trips_and_a_redis_hit_one(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(CACHE_NEAR_BYTES=0, CACHE_NEAR_TRUST=60.0)
    client = app.test_client()
    client.get("/api/v1/feed?limit=3")  # script loaded, epoch created (its push re-fetches it once)
    client.get("/api/v1/feed?limit=3")  # counters copied, connections open
    trips = RoundTrips(monkeypatch)
    assert client.get("/api/v1/feed?limit=4").headers["X-App-Cache"] == "miss"
    assert trips.count == 2  # the lookup script (entry or lock + record), then the fill pipeline
    trips.count = 0
    assert client.get("/api/v1/feed?limit=4").headers["X-App-Cache"] == "hit"
    assert trips.count == 1


def test_a_server_that_lost_the_lookup_script_gets_it_again_within_the_same_lookup(
    make_app: Callable[..., Flask], redis_client: redis.Redis
) -> None:
    """A Redis restart or SCRIPT FLUSH empties the server's script cache: the lookup's EVALSHA
    answers NOSCRIPT and the same lookup runs the source (EVAL), so the page is cached as ever
    and the breaker never hears of it."""
    app = make_app()
    client = app.test_client()
    assert client.get("/api/v1/feed?limit=3").headers["X-App-Cache"] == "miss"  # the script is loaded
    redis_client.script_flush()
    assert not redis_client.script_exists(page_cache.pages(app).store._lookup.sha)[0]  # type: ignore[attr-defined]
    assert client.get("/api/v1/feed?limit=5").headers["X-App-Cache"] == "miss"
    assert page_cache.pages(app).store.breaker.failures == 0  # type: ignore[attr-defined]
    assert redis_client.script_exists(page_cache.pages(app).store._lookup.sha)[0]  # type: ignore[attr-defined]
    assert client.get("/api/v1/feed?limit=5").headers["X-App-Cache"] in {"hit", "near_hit"}


def test_with_redis_away_identical_misses_collapse_in_the_process_and_never_wait(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.api.feeds as feeds

    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    client = app.test_client()
    client.get("/api/v1/feed?limit=2")  # open the breaker
    original = feeds.feed_page
    calls: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        time.sleep(0.3)  # a query that takes a while: every reader arrives while it runs
        return original(*args, **kwargs)

    monkeypatch.setattr(feeds, "feed_page", counted)
    barrier = threading.Barrier(20)
    results: list[tuple[int, str, float]] = []

    def read() -> None:
        reader = app.test_client()
        barrier.wait()
        started = time.perf_counter()
        response = reader.get(FEED)
        results.append((response.status_code, response.headers["X-App-Cache"], time.perf_counter() - started))

    threads = [threading.Thread(target=read) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [r[:2] for r in results] == [(200, "bypass")] * 20
    assert len(calls) == 1, len(calls)
    assert max(r[2] for r in results) < 3.0, results  # not CACHE_MISS_WAIT (5 s) spinning on a dead lock


def test_a_miss_waiting_for_another_process_fill_ends_with_its_database_deadline(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI's chaos run (PostgreSQL stopped): a miss waited behind one fill holder after another,
    each bounded by its own deadline but each started later, and answered after 4.97 s. Waiting
    for another process's fill is one of the request's waits on the database: it ends with the
    request's deadline (503 problem+json, or the edge's stale copy), not with CACHE_MISS_WAIT."""
    import app.api.feeds as feeds

    settings = {"CACHE_NEAR_BYTES": 0, "CACHE_MISS_WAIT": 5.0, "CACHE_LOCK_TTL": 10.0, "DB_DEADLINE_MS": 500}
    holder_app, waiter_app = make_app(**settings), make_app(**settings)  # two processes' state
    url = f"/api/v1/feed?limit={40 + int(time.time()) % 20}"  # a page nobody has cached
    original = feeds.feed_page
    holding, release = threading.Event(), threading.Event()

    def held(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == "holder":  # the other process's fill never ends
            holding.set()
            release.wait(15)
        return original(*args, **kwargs)

    monkeypatch.setattr(feeds, "feed_page", held)
    holder = threading.Thread(target=lambda: holder_app.test_client().get(url), name="holder")
    holder.start()
    try:
        assert holding.wait(10), "the holder never took the fill lock"
        started = time.perf_counter()
        answer = waiter_app.test_client().get(url)
        waited = time.perf_counter() - started
    finally:
        release.set()
        holder.join(20)
    assert answer.status_code == 503 and answer.mimetype == "application/problem+json", answer.data
    assert answer.json["code"] == "unavailable" and answer.headers["Retry-After"] == "5"
    assert waited < 2.5, waited  # the deadline (0.5 s) and slack, not CACHE_MISS_WAIT (5 s)
    assert waiter_app.test_client().get(url).status_code == 200  # the holder's fill landed meanwhile
