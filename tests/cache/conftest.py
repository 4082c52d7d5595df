"""Cache tests run on committed data (a database of their own) with a real Redis server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import event

from app.extensions import db
from devstack.servers import Redis
from tests.conftest import build_app, migrate_and_seed

CACHE_CONFIG = {"CACHE_BREAKER_COOLDOWN": 0.2, "CACHE_TIMEOUT": 0.05}


@pytest.fixture(scope="module")
def cache_db(make_database) -> str:  # type: ignore[no-untyped-def]
    url = make_database("readwire_cache")
    migrate_and_seed(build_app(url), 200, seed=3)
    return url


@pytest.fixture
def redis_client(redis_server: Redis) -> Iterator[redis.Redis]:
    if not redis_server.is_running():
        redis_server.restart()
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()  # test isolation only; the app never flushes
    yield client
    client.close()


@pytest.fixture
def cached_app(cache_db: str, redis_server: Redis, redis_client: redis.Redis) -> Iterator[Flask]:
    application = build_app(cache_db, REDIS_URL=redis_server.url, **CACHE_CONFIG)
    yield application
    with application.app_context():
        db.engine.dispose()


class StatementLog(list[str]):
    def pages(self) -> list[str]:
        """The feed/comment page statements (LIMIT), as opposed to lookups and tag loads."""
        return [s for s in self if "LIMIT" in s]


@pytest.fixture
def sql(cached_app: Flask) -> Iterator[StatementLog]:
    seen = StatementLog()

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    with cached_app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def make_app(cache_db: str, redis_server: Redis, redis_client: redis.Redis) -> Iterator[Callable[..., Flask]]:
    """Apps on the cache tests' database and Redis with settings of the test's own (each its own
    process state, as separate workers are); their background refreshes end before teardown."""
    from app.extensions import page_cache

    built: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        application = build_app(cache_db, **{"REDIS_URL": redis_server.url, **CACHE_CONFIG, **overrides})
        built.append(application)
        return application

    yield make
    for application in built:
        page_cache.pages(application).wait_for_refreshes()
        with application.app_context():
            db.engine.dispose()
