"""Prometheus metrics: request durations by Flask endpoint and status class (bounded labels,
never the raw path), cache outcomes, the /metrics exposition (not cached, not CORS), and the
multiprocess mode gunicorn uses (values summed over worker files, dead workers' gauges dropped)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from app.observability.metrics import REGISTRY
from tests.conftest import REPO, SECRET


def requests_counted(endpoint: str, status: str) -> float:
    labels = {"endpoint": endpoint, "status": status}
    return REGISTRY.get_sample_value("readwire_http_request_duration_seconds_count", labels) or 0.0


def test_requests_are_counted_by_endpoint_and_status_class(client: FlaskClient) -> None:
    ok, missing = requests_counted("feeds.global_feed", "2xx"), requests_counted("posts.post_detail", "4xx")
    cached = (
        REGISTRY.get_sample_value(
            "readwire_cache_requests_total", {"endpoint": "feeds.global_feed", "outcome": "not_modified"}
        )
        or 0.0
    )
    etag = client.get("/api/v1/feed").headers["ETag"]
    client.get("/api/v1/feed")
    client.get("/api/v1/feed", headers={"If-None-Match": etag})
    client.get("/api/v1/posts/999999999")
    assert requests_counted("feeds.global_feed", "2xx") == ok + 2
    assert requests_counted("feeds.global_feed", "3xx") >= 1
    assert requests_counted("posts.post_detail", "4xx") == missing + 1
    assert (
        REGISTRY.get_sample_value(
            "readwire_cache_requests_total", {"endpoint": "feeds.global_feed", "outcome": "not_modified"}
        )
        == cached + 1
    )


def test_labels_never_carry_the_path(client: FlaskClient) -> None:
    for n in range(30):
        client.get(f"/api/v1/categories/no-such-slug-{n}/feed")
        client.get(f"/api/v1/unrouted-{n}")
    text = client.get("/metrics").get_data(as_text=True)
    assert "no-such-slug" not in text and "unrouted" not in text
    assert 'endpoint="feeds.category_feed"' in text and 'endpoint="none"' in text


def test_metrics_are_not_cached_and_not_cross_origin(client: FlaskClient) -> None:
    response = client.get("/metrics", headers={"Origin": "https://x.example"})
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")  # the Prometheus text format
    assert response.headers["Cache-Control"] == "no-store" and "ETag" not in response.headers
    assert "Access-Control-Allow-Origin" not in response.headers
    for name in ("readwire_http_request_duration_seconds_bucket", "readwire_db_pool_checked_out",
                 "readwire_db_pool_capacity", "readwire_cache_circuit_open"):  # fmt: skip
        assert name in response.get_data(as_text=True)


def test_metrics_can_be_turned_off(make_embedded) -> None:  # type: ignore[no-untyped-def]
    app: Flask = make_embedded(METRICS_ENABLED=False)
    before = requests_counted("health.healthz", "2xx")
    response = app.test_client().get("/healthz")
    assert response.headers["X-Request-ID"]  # the rest of the layer stays
    assert requests_counted("health.healthz", "2xx") == before
    assert app.test_client().get("/metrics").status_code == 404


WORKER = """
import os, sys
from app import create_app
app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite:///" + sys.argv[1], "SECRET_KEY": sys.argv[2]})
client = app.test_client()
for _ in range(int(sys.argv[3])):
    assert client.get("/healthz").status_code == 200
if sys.argv[4] == "scrape":
    sys.stdout.write(client.get("/metrics").get_data(as_text=True))
else:
    print(os.getpid())
"""


@pytest.mark.slow  # ~4 s: three Python processes importing the app
def test_multiprocess_mode_sums_the_workers(tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "READWIRE_INSTANCE_DIR": str(tmp_path),
           "PYTHONPATH": str(REPO), "REQUEST_LOG": "0"}  # fmt: skip

    def run(requests: int, mode: str) -> str:
        args = [sys.executable, "-c", WORKER, str(tmp_path / "db.sqlite3"), SECRET, str(requests), mode]
        return subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, check=True).stdout

    first, _ = int(run(3, "pid")), run(2, "pid")
    scraped = run(0, "scrape")  # a third worker answers /metrics with everyone's numbers
    assert 'readwire_http_request_duration_seconds_count{endpoint="health.healthz",status="2xx"} 5.0' in scraped

    def capacity() -> float:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(directory))
        return registry.get_sample_value("readwire_db_pool_capacity") or 0.0

    per_worker = capacity() / 3
    assert per_worker > 0
    mark_process_dead(first, str(directory))  # gunicorn's child_exit hook does this
    assert capacity() == 2 * per_worker  # a dead worker's gauges are dropped...
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    counted = registry.get_sample_value(
        "readwire_http_request_duration_seconds_count", {"endpoint": "health.healthz", "status": "2xx"}
    )
    assert counted == 5  # ...its requests still count
