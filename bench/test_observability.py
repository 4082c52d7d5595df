"""What the observability layer costs per request on the cache-hit path, measured in one run.

The same cached feed page (GET /api/v1/feed, 20 posts, hot in-process copy) through apps that
differ only in their observability settings, all on the same PostgreSQL and Redis:
- off: OBSERVABILITY=0 (no request hooks at all: the baseline);
- request id: the hooks with METRICS_ENABLED=0 and REQUEST_LOG=0 (X-Request-ID in and out);
- + metrics: request id and Prometheus (histogram + cache-outcome counter, pool sampling): the
  production default;
- + access log: REQUEST_LOG=1, one JSON access-log line per request (a write to a real file
  per request, as stderr into a pipe or file costs in production);
and the 304 revalidation with the layer on and off.

    .venv/bin/python -m pytest bench/test_observability.py -p no:cacheprovider

pytest attaches its own log-capture handlers to every non-propagating logger; they are removed
while measuring, so the access line costs what it costs in production (one JSON handler).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.extensions import db
from app.observability.logs import JsonFormatter
from bench.conftest import SECRET

FEED = "/api/v1/feed"
VARIANTS = {
    "off": {"OBSERVABILITY": False},
    "request_id": {"METRICS_ENABLED": False, "REQUEST_LOG": False},
    "metrics": {},  # the default
    "on": {"REQUEST_LOG": True},
}


@pytest.fixture(scope="module")
def apps(app: Flask, database_url: str, redis_url: str) -> Iterator[dict[str, Flask]]:
    """One app per variant, built from the same URLs as the harness's app (which is seeded)."""
    built = {
        name: create_app(
            {"SQLALCHEMY_DATABASE_URI": database_url, "SECRET_KEY": SECRET, "REDIS_URL": redis_url, **overrides}
        )
        for name, overrides in VARIANTS.items()
    }
    yield built
    for application in built.values():
        with application.app_context():
            db.engine.dispose()


@contextmanager
def production_log_handlers(tmp_path: Path) -> Iterator[None]:
    """Only our JSON handler on our loggers, writing to a real file (pytest's stderr capture is
    several times slower per write than the pipe or file stderr is in production)."""
    loggers = [logging.getLogger(name) for name in ("app", "readwire", "readwire.access")]
    foreign = [(lg, h) for lg in loggers for h in lg.handlers if not isinstance(h.formatter, JsonFormatter)]
    ours = next(h for h in loggers[2].handlers if isinstance(h.formatter, JsonFormatter))
    assert isinstance(ours, logging.StreamHandler)
    for logger, handler in foreign:
        logger.removeHandler(handler)
    with open(tmp_path / "access.log", "w") as log_file:
        previous = ours.setStream(log_file)
        try:
            yield
        finally:
            ours.setStream(previous)  # type: ignore[arg-type]
            for logger, handler in foreign:
                logger.addHandler(handler)


def warm(client: FlaskClient) -> bytes:
    client.get(FEED)
    response = client.get(FEED)
    assert response.status_code == 200
    return response.get_data()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cache_hit(benchmark, apps: dict[str, Flask], variant: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = apps[variant].test_client()
    body = warm(client)
    benchmark.group = "observability: cache hit"
    with production_log_handlers(tmp_path):
        response = benchmark(client.get, FEED)
    assert response.status_code == 200 and response.get_data() == body
    assert ("X-Request-ID" in response.headers) == (variant != "off")


@pytest.mark.parametrize("variant", ["off", "on"])
def test_not_modified(benchmark, apps: dict[str, Flask], variant: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = apps[variant].test_client()
    warm(client)
    ttl = client.application.config["CACHE_TTL_FEED"]
    if time.time() % ttl > ttl - 5:  # the ETag rolls over at each TTL bucket (counter lag bound)
        time.sleep(ttl - time.time() % ttl + 0.05)
    etag = client.get(FEED).headers["ETag"]
    get: Callable[[], object] = lambda: client.get(FEED, headers={"If-None-Match": etag})  # noqa: E731
    benchmark.group = "observability: 304"
    with production_log_handlers(tmp_path):
        response = benchmark(get)
    assert response.status_code == 304  # type: ignore[attr-defined]
