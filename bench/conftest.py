"""Benchmark harness: the real app on a throwaway PostgreSQL and Redis (started here, or the
ones named by BENCH_DATABASE_URL / BENCH_REDIS_URL), seeded once per run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from flask import Flask, Response
from flask.testing import FlaskClient

from app import create_app
from app.extensions import db
from devstack.servers import Redis, throwaway_postgres

REPO = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-not-for-production-0123456789"
BENCH_POSTS = int(os.environ.get("BENCH_POSTS", 5000))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    if url := os.environ.get("BENCH_DATABASE_URL"):
        yield url
        return
    with throwaway_postgres() as server:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute('CREATE DATABASE "readwire_bench"')
        base, _, _ = server.url.rpartition("/")
        yield f"{base}/readwire_bench"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("BENCH_REDIS_URL"):
        yield url
        return
    server = Redis.start(tmp_path_factory.mktemp("redis"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def app(database_url: str, redis_url: str) -> Iterator[Flask]:
    from flask_migrate import upgrade

    from app.seed import seed

    application = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "SECRET_KEY": SECRET, "REDIS_URL": redis_url})
    with application.app_context():
        upgrade(directory=str(REPO / "migrations"))
        seed(BENCH_POSTS, seed=11, progress=False, if_empty=True)
    redis.Redis.from_url(redis_url).flushdb()  # harness only: start each run from an empty cache

    # The floor for the cached path: a view returning bytes a benchmark puts in BARE_BODY.
    def bare() -> Response:
        return Response(application.config["BARE_BODY"], mimetype="application/json")

    application.add_url_rule("/bench/bare", "bench_bare", bare)
    yield application
    with application.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
