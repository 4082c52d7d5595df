"""Flask-Caching (the design card names it) against Readwire's page cache, in one run.

The same feed page (GET /api/v1/feed, 20 posts), the same app, the same real Redis, both
through the Flask test client:
- readwire: the production path with its in-process layer on (the page and the generation
  counters mirrored in process: no Redis round trip on a hit);
- readwire_redis: the same with CACHE_NEAR_BYTES=0, so every hit GETs the entry from Redis;
- flask_caching: Readwire's own feed view wrapped in ``@cache.cached(query_string=True)`` on a
  ``RedisCache``: a hit is one GET and an unpickle of the stored Response.
And a revalidation (If-None-Match with the ETag the client holds):
- readwire answers 304 from the validator stored with the entry (the near copy: no round trip);
- flask_caching returns the cached 200 with the whole body (it has no conditional handling);
- flask_caching + make_conditional (what an app would bolt on) answers 304, but only after
  fetching and unpickling the whole entry.
Two deterministic companions (wall-clock figures on a shared machine are noisy):
test_redis_traffic_per_request counts Redis commands and reply bytes per request for each case
(and shows the Flask-Caching entry is a pickled Response); test_flask_caching_has_no_single_flight
counts what Flask-Caching does on concurrent misses (Readwire: one computation, see
tests/cache/test_cache.py::test_hundred_concurrent_misses_run_the_page_query_once).

    .venv/bin/python -m pytest bench/test_flask_caching.py -p no:cacheprovider
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask import Flask, Response, request
from flask.testing import FlaskClient
from flask_caching import Cache

from app import create_app
from app.extensions import db
from bench.conftest import SECRET

FEED = "/api/v1/feed"
FLASK_CACHING = "/bench/flask-caching/feed"
FLASK_CACHING_CONDITIONAL = "/bench/flask-caching-conditional/feed"
SLOW_SOURCE = "/bench/flask-caching-slow/feed"
SLOW_SECONDS = 0.2  # a cold page on a loaded database; long enough for every thread to miss


def _build(database_url: str, redis_url: str, **overrides: Any) -> Flask:
    settings = {"SQLALCHEMY_DATABASE_URI": database_url, "SECRET_KEY": SECRET, "REDIS_URL": redis_url}
    return create_app({**settings, **overrides})


@pytest.fixture(scope="module")
def apps(app: Flask, database_url: str, redis_url: str) -> Iterator[dict[str, Any]]:
    """Readwire as configured, Readwire without its in-process layer, and Flask-Caching routes on
    the first app (registered before it serves a request), all on the harness's seeded database."""
    readwire = _build(database_url, redis_url)
    readwire_redis = _build(database_url, redis_url, CACHE_NEAR_BYTES=0)
    cache = Cache(
        readwire,
        config={
            "CACHE_TYPE": "RedisCache",
            "CACHE_REDIS_URL": redis_url,
            "CACHE_KEY_PREFIX": "bench-flask-caching:",
            "CACHE_DEFAULT_TIMEOUT": 300,
        },
    )
    endpoint, _ = readwire.url_map.bind("localhost").match(FEED)
    feed_view: Callable[[], Response] = readwire.view_functions[endpoint]
    cached_view = cache.cached(query_string=True)(feed_view)
    source_calls: list[float] = []

    def slow_source() -> Response:
        source_calls.append(time.monotonic())
        time.sleep(SLOW_SECONDS)
        return feed_view()

    readwire.add_url_rule(FLASK_CACHING, "bench_flask_caching", cached_view)
    readwire.add_url_rule(
        FLASK_CACHING_CONDITIONAL,
        "bench_flask_caching_conditional",
        lambda: cached_view().make_conditional(request),  # its own entry: the key is the request path
    )
    readwire.add_url_rule(SLOW_SOURCE, "bench_flask_caching_slow", cache.cached(query_string=True)(slow_source))
    yield {"readwire": readwire, "readwire_redis": readwire_redis, "cache": cache, "source_calls": source_calls}
    cache.clear()
    for application in (readwire, readwire_redis):
        with application.app_context():
            db.engine.dispose()


@pytest.fixture(scope="module")
def page(apps: dict[str, Any]) -> bytes:
    response = apps["readwire"].test_client().get(FEED)
    assert response.status_code == 200
    return response.get_data()


def warm(client: FlaskClient, url: str, page: bytes) -> None:
    for _ in range(3):  # the first fills the entry, the next are hits
        response = client.get(url)
        assert response.status_code == 200 and response.get_data() == page


def current_etag(client: FlaskClient, url: str) -> str:
    """Readwire's ETag rolls over once per TTL bucket (the counter-lag bound): wait out a bucket
    about to end so a 1 s benchmark sees one ETag."""
    ttl = client.application.config["CACHE_TTL_FEED"]
    if time.time() % ttl > ttl - 5:
        time.sleep(ttl - time.time() % ttl + 0.05)
    return client.get(url).headers["ETag"]


def test_hit_readwire(benchmark, apps: dict[str, Any], page: bytes) -> None:  # type: ignore[no-untyped-def]
    client = apps["readwire"].test_client()
    warm(client, FEED, page)
    response = benchmark(client.get, FEED)
    assert response.status_code == 200 and response.get_data() == page


def test_hit_readwire_redis(benchmark, apps: dict[str, Any], page: bytes) -> None:  # type: ignore[no-untyped-def]
    client = apps["readwire_redis"].test_client()
    warm(client, FEED, page)
    response = benchmark(client.get, FEED)
    assert response.status_code == 200 and response.get_data() == page


def test_hit_flask_caching(benchmark, apps: dict[str, Any], page: bytes) -> None:  # type: ignore[no-untyped-def]
    client = apps["readwire"].test_client()
    warm(client, FLASK_CACHING, page)
    response = benchmark(client.get, FLASK_CACHING)
    assert response.status_code == 200 and response.get_data() == page


def test_revalidate_readwire(benchmark, apps: dict[str, Any], page: bytes) -> None:  # type: ignore[no-untyped-def]
    client = apps["readwire"].test_client()
    warm(client, FEED, page)
    etag = current_etag(client, FEED)
    response = benchmark(client.get, FEED, headers={"If-None-Match": etag})
    assert response.status_code == 304 and response.get_data() == b""


def test_revalidate_flask_caching(benchmark, apps: dict[str, Any], page: bytes) -> None:  # type: ignore[no-untyped-def]
    """No conditional handling: the client's ETag is ignored and the whole page comes back."""
    client = apps["readwire"].test_client()
    warm(client, FLASK_CACHING, page)
    etag = current_etag(client, FLASK_CACHING)
    response = benchmark(client.get, FLASK_CACHING, headers={"If-None-Match": etag})
    assert response.status_code == 200 and response.get_data() == page


def test_revalidate_flask_caching_make_conditional(benchmark, apps: dict[str, Any], page: bytes) -> None:  # type: ignore[no-untyped-def]
    """A 304, but after the whole pickled entry came from Redis and was unpickled."""
    client = apps["readwire"].test_client()
    warm(client, FLASK_CACHING_CONDITIONAL, page)
    etag = client.get(FLASK_CACHING_CONDITIONAL).headers["ETag"]
    response = benchmark(client.get, FLASK_CACHING_CONDITIONAL, headers={"If-None-Match": etag})
    assert response.status_code == 304 and response.get_data() == b""


def test_flask_caching_has_no_single_flight(apps: dict[str, Any], page: bytes) -> None:
    """Concurrent misses on one key each run the view: N requests, N computations."""
    threads_count = 8
    app: Flask = apps["readwire"]
    apps["cache"].clear()
    apps["source_calls"].clear()
    start = threading.Barrier(threads_count)
    statuses: list[int] = []

    def one() -> None:
        client = app.test_client()
        start.wait(timeout=30)
        statuses.append(client.get(SLOW_SOURCE).status_code)

    threads = [threading.Thread(target=one) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert statuses == [200] * threads_count
    computed = len(apps["source_calls"])
    print(f"\nflask-caching: {threads_count} concurrent misses on one key -> {computed} computations")
    assert computed > 1  # Readwire: 1 (single flight); here typically all of them


def redis_traffic(client: redis.Redis, send: Callable[[], Any], requests: int) -> tuple[dict[str, float], float]:
    """Redis commands (by name) and reply bytes per request over `requests` calls of `send`, net
    of the INFO calls that measure them (a run of zero requests is subtracted)."""

    def snapshot() -> tuple[dict[str, int], int]:
        commands = {name.removeprefix("cmdstat_"): stat["calls"] for name, stat in client.info("commandstats").items()}
        return commands, int(client.info("stats")["total_net_output_bytes"])

    def run(count: int) -> tuple[dict[str, int], int]:
        before, before_bytes = snapshot()
        for _ in range(count):
            send()
        after, after_bytes = snapshot()
        calls = {name: n - before.get(name, 0) for name, n in after.items() if name != "info"}
        return {name: n for name, n in calls.items() if n}, after_bytes - before_bytes

    _, overhead = run(0)
    calls, sent = run(requests)
    return {name: n / requests for name, n in calls.items()}, (sent - overhead) / requests


def test_redis_traffic_per_request(apps: dict[str, Any], page: bytes, redis_url: str) -> None:
    requests = 200
    readwire, readwire_redis = apps["readwire"].test_client(), apps["readwire_redis"].test_client()
    for client, url in ((readwire, FEED), (readwire_redis, FEED), (readwire, FLASK_CACHING)):
        warm(client, url, page)
    readwire.get(FLASK_CACHING_CONDITIONAL)
    etag = current_etag(readwire, FEED)
    fc_etag = readwire.get(FLASK_CACHING).headers["ETag"]
    cases: dict[str, tuple[Callable[[], Any], int]] = {
        "readwire hit": (lambda: readwire.get(FEED), 200),
        "readwire hit, no in-process layer": (lambda: readwire_redis.get(FEED), 200),
        "flask-caching hit": (lambda: readwire.get(FLASK_CACHING), 200),
        "readwire If-None-Match": (lambda: readwire.get(FEED, headers={"If-None-Match": etag}), 304),
        "flask-caching If-None-Match": (lambda: readwire.get(FLASK_CACHING, headers={"If-None-Match": fc_etag}), 200),
        "flask-caching + make_conditional": (
            lambda: readwire.get(FLASK_CACHING_CONDITIONAL, headers={"If-None-Match": fc_etag}),
            304,
        ),
    }
    store = redis.Redis.from_url(redis_url)
    measured: dict[str, tuple[dict[str, float], float]] = {}
    for name, (send, status) in cases.items():
        assert send().status_code == status, name
        measured[name] = redis_traffic(store, send, requests)
    print(f"\nRedis traffic per request (page body {len(page):,} bytes):")
    for name, (calls, sent) in measured.items():
        commands = ", ".join(f"{n:.2f} {cmd.upper()}" for cmd, n in sorted(calls.items())) or "none"
        print(f"  {name:36s} {commands:24s} {sent:9,.0f} bytes")

    [key] = list(store.scan_iter(match=f"bench-flask-caching:*{FLASK_CACHING}*"))  # this run's own Redis
    raw = store.get(key)
    assert raw is not None and raw.startswith(b"!")  # cachelib's RedisSerializer: b"!" + pickle.dumps(value)
    assert isinstance(pickle.loads(raw[1:]), Response)  # the whole Response object, pickled
    print(f"  flask-caching entry: a pickled {type(pickle.loads(raw[1:])).__name__}, {len(raw):,} bytes")

    for name in ("readwire hit", "readwire If-None-Match"):  # mirrored counters, page in process
        assert sum(measured[name][0].values()) < 0.25, measured[name]
    for name in ("flask-caching hit", "flask-caching If-None-Match", "flask-caching + make_conditional"):
        calls, sent = measured[name]
        assert calls.get("get") == 1 and sent >= len(page), measured[name]  # the whole entry, every time
