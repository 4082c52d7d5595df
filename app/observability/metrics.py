"""Prometheus metrics: requests by endpoint, cache outcomes and errors, rate-limit rejections,
and the state of the pools and of the cache circuit breaker.

Labels are bounded: `endpoint` is the Flask endpoint name (never the raw path), `status` the
status class. With PROMETHEUS_MULTIPROC_DIR set (gunicorn: several workers), values live in
per-process files in that directory and /metrics sums them (prometheus_client's multiprocess
mode); the directory must be emptied before the server starts, and gunicorn's child_exit hook
must call `mark_process_dead(worker.pid)` so gauges of dead workers are dropped.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, Response, current_app
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from app.compat import redis_pool_in_use

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
# Single process: the metrics register here and /metrics renders this registry. Multiprocess:
# they register nowhere (their values go to files) and /metrics reads the files instead.
REGISTRY = CollectorRegistry(auto_describe=True)
_REGISTRY = None if MULTIPROCESS else REGISTRY

# A cache hit is ~0.15 ms in-process, a miss a few ms, a slow database or Redis timeout tens of ms.
LATENCY_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

HTTP_DURATION = Histogram(
    "readwire_http_request_duration_seconds",
    "Time to answer a request in the app (its _count is the request count), by Flask endpoint and status class.",
    ["endpoint", "status"],
    buckets=LATENCY_BUCKETS,
    registry=_REGISTRY,
)
CACHE_REQUESTS = Counter(
    "readwire_cache_requests",
    "Cached reads by outcome: near_hit (this process's copy), hit (from Redis), not_modified (304), "
    "stale (served past its TTL), refresh (this worker recomputed a stale page), miss, "
    "degraded_hit (cache unreachable: this process's copy, checked against the database's generations), "
    "bypass (cache unreachable: answered from the database).",
    ["endpoint", "outcome"],
    registry=_REGISTRY,
)
CACHE_ERRORS = Counter(
    "readwire_cache_errors", "Failed Redis calls (each one a miss or a dropped write).", ["error"], registry=_REGISTRY
)
PAGE_FILLS = Counter(
    "readwire_page_fills",
    "Pages computed for the cache, by the database read (primary, replica) and why: replayed (the replica "
    "had replayed the page's last write), behind (no replica had), no_replica (none in rotation), "
    "unknown_lsn (cache away), pinned (a page read on the primary by design), replica_failed.",
    ["database", "reason"],
    registry=_REGISTRY,
)
REPLICA_UP = Gauge(
    "readwire_db_replica_up",
    "1 while a read replica is in rotation, 0 while it is left out (down, promoted, lagging, stalled).",
    ["replica"],
    registry=_REGISTRY,
    multiprocess_mode="livemin",
)
REPLICA_LAG_BYTES = Gauge(
    "readwire_db_replica_lag_bytes",
    "WAL between the primary's position and the replica's replay, at the last health round.",
    ["replica"],
    registry=_REGISTRY,
    multiprocess_mode="livemax",
)
RATELIMIT_REJECTIONS = Counter(
    "readwire_ratelimit_rejections", "Requests answered 429, by rate-limit policy.", ["policy"], registry=_REGISTRY
)
# Sampled (see Sampler); "livesum"/"livemax" drop the values of dead workers in multiprocess mode.
DB_POOL_CHECKED_OUT = Gauge(
    "readwire_db_pool_checked_out", "Database connections in use.", registry=_REGISTRY, multiprocess_mode="livesum"
)
DB_POOL_CAPACITY = Gauge(
    "readwire_db_pool_capacity",
    "Database connections allowed (pool size + overflow).",
    registry=_REGISTRY,
    multiprocess_mode="livesum",
)
REDIS_POOL_IN_USE = Gauge(
    "readwire_redis_pool_in_use", "Redis connections in use.", registry=_REGISTRY, multiprocess_mode="livesum"
)
REDIS_POOL_CAPACITY = Gauge(
    "readwire_redis_pool_capacity", "Redis connections allowed.", registry=_REGISTRY, multiprocess_mode="livesum"
)
CACHE_CIRCUIT_OPEN = Gauge(
    "readwire_cache_circuit_open",
    "1 while the cache circuit breaker is open or half-open (reads skip Redis), else 0.",
    registry=_REGISTRY,
    multiprocess_mode="livemax",
)

_STATUS_CLASSES = ("1xx", "1xx", "2xx", "3xx", "4xx", "5xx")


class RequestMetrics:
    """The per-request part, kept cheap: labelled children are looked up once per label set."""

    def __init__(self) -> None:
        self._durations: dict[tuple[str, int], Any] = {}
        self._outcomes: dict[tuple[str, str], Any] = {}

    def observe(self, endpoint: str, status: int, seconds: float, outcome: str | None) -> None:
        key = (endpoint, status // 100)
        histogram = self._durations.get(key)
        if histogram is None:
            histogram = self._durations[key] = HTTP_DURATION.labels(endpoint, _STATUS_CLASSES[min(key[1], 5)])
        histogram.observe(seconds)
        if outcome is not None:
            counter = self._outcomes.get((endpoint, outcome))
            if counter is None:
                counter = self._outcomes[(endpoint, outcome)] = CACHE_REQUESTS.labels(endpoint, outcome)
            counter.inc()


class Sampler:
    """Copies pool and breaker state into the gauges, at most once per `interval` per process,
    from the request path (no background thread), and at every scrape of /metrics."""

    def __init__(self, engine: Any, store: Any, db_capacity: int, interval: float) -> None:
        self.interval = interval
        self.next_at = time.perf_counter()
        self.engine = engine
        self.store = store
        self.db_capacity = db_capacity

    def maybe_sample(self, now: float) -> None:
        if now >= self.next_at:
            self.next_at = now + self.interval
            self.sample()

    def sample(self) -> None:
        pool: Any = self.engine.pool
        checked_out = getattr(pool, "checkedout", None)
        if checked_out is not None:
            DB_POOL_CHECKED_OUT.set(checked_out())
            DB_POOL_CAPACITY.set(self.db_capacity or getattr(pool, "size", lambda: 0)())
        breaker = getattr(self.store, "breaker", None)
        CACHE_CIRCUIT_OPEN.set(0 if breaker is None or breaker.state == "closed" else 1)
        redis_pool: Any = getattr(getattr(self.store, "client", None), "connection_pool", None)
        in_use = redis_pool_in_use(redis_pool) if redis_pool is not None else None
        if in_use is not None:
            REDIS_POOL_IN_USE.set(in_use)
            REDIS_POOL_CAPACITY.set(redis_pool.max_connections)


def render() -> bytes:
    """The exposition: this process's registry, or every worker's files in multiprocess mode."""
    if not MULTIPROCESS:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


class Metrics:
    """Flask extension: /metrics, the per-request recorder and the sampler of one app (None
    when METRICS_ENABLED is off)."""

    key = "metrics"

    def init_app(self, app: Flask, engine: Any, store: Any) -> tuple[RequestMetrics, Sampler] | None:
        if not app.config["METRICS_ENABLED"]:
            app.extensions[self.key] = None
            return None
        options = app.config["SQLALCHEMY_ENGINE_OPTIONS"]
        capacity = options.get("pool_size", 0) + options.get("max_overflow", 0)
        sampler = Sampler(engine, store, capacity, float(app.config["METRICS_SAMPLE_INTERVAL"]))
        app.extensions[self.key] = sampler
        app.add_url_rule("/metrics", "metrics", self.view)
        return RequestMetrics(), sampler

    def sampler(self, app: Flask | None = None) -> Sampler | None:
        sampler: Sampler | None = (app or current_app).extensions[self.key]
        return sampler

    def view(self) -> Response:
        """GET /metrics: Prometheus text format; never cached, never CORS (not under /api/v1)."""
        sampler = self.sampler()
        if sampler is not None:
            sampler.sample()
        response = Response(render(), content_type=CONTENT_TYPE_LATEST)
        response.headers["Cache-Control"] = "no-store"
        return response
