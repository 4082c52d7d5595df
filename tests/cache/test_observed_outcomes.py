"""What serve() did, as the metrics count it (real Redis and PostgreSQL): near hit, hit, 304,
miss, stale, refresh and bypass; Redis errors and the breaker state; rate-limit counters shared
through Redis by every process, and kept in-process while Redis is unreachable."""

from __future__ import annotations

import time

from flask import Flask

from app.cache.keys import PREFIX
from app.extensions import metrics
from app.observability.metrics import REGISTRY
from devstack.servers import free_port

FEED = "/api/v1/feed?limit=7"


def outcomes(endpoint: str = "feeds.global_feed") -> dict[str, float]:
    names = ("near_hit", "hit", "not_modified", "miss", "stale", "refresh", "degraded_hit", "bypass")
    return {
        name: REGISTRY.get_sample_value("readwire_cache_requests_total", {"endpoint": endpoint, "outcome": name}) or 0.0
        for name in names
    }


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in after if after[name] != before[name]}


def test_miss_then_near_hit_then_304(make_app) -> None:  # type: ignore[no-untyped-def]
    client = make_app().test_client()
    before = outcomes()
    etag = client.get(FEED).headers["ETag"]
    client.get(FEED)
    assert client.get(FEED, headers={"If-None-Match": etag}).status_code == 304
    assert delta(before, outcomes()) == {"miss": 1, "near_hit": 1, "not_modified": 1}


def test_the_outcome_travels_in_x_app_cache(make_app) -> None:  # type: ignore[no-untyped-def]
    """What load tests split latency by: the page cache's outcome on every cached GET."""
    client = make_app().test_client()
    first = client.get(FEED)
    second = client.get(FEED)
    not_modified = client.get(FEED, headers={"If-None-Match": first.headers["ETag"]})
    assert [r.headers.get("X-App-Cache") for r in (first, second, not_modified)] == ["miss", "near_hit", "not_modified"]
    assert "X-App-Cache" not in client.get("/healthz").headers  # not a cached read
    assert make_app(CACHE_NEAR_BYTES=0).test_client().get(FEED).headers["X-App-Cache"] == "hit"


def test_a_hit_from_redis_when_nothing_is_kept_in_process(make_app) -> None:  # type: ignore[no-untyped-def]
    client = make_app(CACHE_NEAR_BYTES=0).test_client()
    before = outcomes()
    client.get(FEED)
    client.get(FEED)
    assert delta(before, outcomes()) == {"miss": 1, "hit": 1}


def test_past_its_ttl_one_worker_refreshes_and_the_others_serve_stale(make_app, redis_client) -> None:  # type: ignore[no-untyped-def]
    client = make_app(CACHE_TTL_FEED=0.05, CACHE_NEAR_BYTES=0).test_client()
    client.get(FEED)
    time.sleep(0.1)
    before = outcomes()
    client.get(FEED)  # this worker takes the refresh lock and recomputes
    assert delta(before, outcomes()) == {"refresh": 1}
    time.sleep(0.1)
    for key in redis_client.scan_iter(f"{PREFIX}p:*"):  # another worker holds the refresh lock
        redis_client.set(key.decode() + "#lock", b"1", px=2000)
    before = outcomes()
    response = client.get(FEED)
    assert response.status_code == 200 and "Age" in response.headers
    assert delta(before, outcomes()) == {"stale": 1}


def unreachable_redis() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


def test_with_redis_unreachable_reads_bypass_then_degraded_hits_errors_count_and_the_breaker_shows_open(
    make_app,
) -> None:  # type: ignore[no-untyped-def]
    app = make_app(REDIS_URL=unreachable_redis())
    client = app.test_client()
    errors_before = REGISTRY.get_sample_value("readwire_cache_errors_total", {"error": "ConnectionError"}) or 0.0
    before = outcomes()
    for _ in range(app.config["CACHE_BREAKER_THRESHOLD"] + 2):
        assert client.get(FEED).status_code == 200
    # The first read computes the page and keeps it under the database's generations; the others
    # are served from that copy (app/cache/generations.py).
    assert delta(before, outcomes()) == {"bypass": 1, "degraded_hit": app.config["CACHE_BREAKER_THRESHOLD"] + 1}
    errors = REGISTRY.get_sample_value("readwire_cache_errors_total", {"error": "ConnectionError"})
    assert errors is not None and errors - errors_before >= app.config["CACHE_BREAKER_THRESHOLD"]
    metrics.sampler(app).sample()
    assert REGISTRY.get_sample_value("readwire_cache_circuit_open") == 1.0


def test_pool_gauges_report_the_configured_capacity(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    app.test_client().get(FEED)
    metrics.sampler(app).sample()
    options = app.config["SQLALCHEMY_ENGINE_OPTIONS"]
    assert REGISTRY.get_sample_value("readwire_db_pool_capacity") == options["pool_size"] + options["max_overflow"]
    assert REGISTRY.get_sample_value("readwire_db_pool_checked_out") == 0  # the request gave its connection back
    assert REGISTRY.get_sample_value("readwire_redis_pool_capacity") == app.config["CACHE_POOL_SIZE"]
    assert REGISTRY.get_sample_value("readwire_cache_circuit_open") == 0.0


def sign_in(app: Flask):  # type: ignore[no-untyped-def]
    return app.test_client().post(
        "/api/v1/auth/token",
        json={"username": "nobody_here", "password": "x"},
        environ_base={"REMOTE_ADDR": "192.0.2.9"},
    )


# Sign-in quota of the sharing test: an hour's window, so that starting a fresh one (below) is rare.
SHARED_QUOTA = (4, 3600)
# Time the sharing test's six sign-ins may take, with a wide margin for a busy machine.
SHARED_MARGIN = 60.0


def start_of_a_window_with(seconds: float, window: int) -> None:
    """Wait, if need be, for the next fixed window (they are aligned to the clock), so that at
    least `seconds` of the current one are left."""
    left = window - time.time() % window
    if left < seconds:
        time.sleep(left + 0.05)


def test_rate_limit_counters_are_shared_by_every_process(make_app, redis_client) -> None:  # type: ignore[no-untyped-def]
    """Two processes' sign-ins count against one quota in Redis. All in one window (a request
    after a window's boundary counts afresh), and with a Redis timeout a CPU-starved test process
    cannot overrun: past CACHE_TIMEOUT each process counts alone, the unreachable-Redis fallback
    tested below, not what this test is about."""
    limit, window = SHARED_QUOTA
    one, two = (make_app(RATELIMIT_AUTH=SHARED_QUOTA, CACHE_TIMEOUT=5.0) for _ in range(2))  # two workers, one Redis
    start_of_a_window_with(SHARED_MARGIN, window)
    assert [sign_in(app).status_code for app in (one, two, one, two)] == [401] * limit
    assert sign_in(one).status_code == 429 and sign_in(two).status_code == 429
    keys = list(redis_client.scan_iter(f"{PREFIX}rl:auth:*"))
    assert len(keys) == 1 and 0 < redis_client.ttl(keys[0]) <= window  # the counter expires with its window
    assert int(redis_client.get(keys[0])) == limit + 2  # every sign-in was counted there, none in a process


def test_rate_limits_hold_while_redis_is_unreachable(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app(REDIS_URL=unreachable_redis(), RATELIMIT_AUTH=(3, 60))
    assert [sign_in(app).status_code for _ in range(4)] == [401, 401, 401, 429]
