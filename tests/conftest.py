"""Test harness: throwaway PostgreSQL and Redis servers for the whole run (or TEST_DATABASE_URL),
the schema built by the Alembic migrations, a seeded dataset, per-test rollback, and the page
cache on the real Redis with the near cache on, emptied before each test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, text
from sqlalchemy.engine import Connection

from app import create_app
from app.extensions import db, invalidation
from devstack.servers import Postgres, Redis, throwaway_postgres

REPO = Path(__file__).resolve().parent.parent
SECRET = "test-secret-not-for-production-0123456789"
BASE_POSTS = 400  # the shared dataset: big enough for multi-page walks in every feed


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Postgres | None]:
    """The throwaway PostgreSQL server, or None when TEST_DATABASE_URL names one."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    with throwaway_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def pg_admin_url(pg_server: Postgres | None) -> str:
    return pg_server.url if pg_server else os.environ["TEST_DATABASE_URL"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    """A throwaway Redis server for this run."""
    server = Redis.start(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def make_database(pg_admin_url: str) -> Iterator[object]:
    """Create (or re-create) a database on the test server and return its URL."""

    def make(name: str) -> str:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        base, _, _ = pg_admin_url.rpartition("/")
        return f"{base}/{name}"

    yield make


def build_app(database_url: str, **overrides: object) -> Flask:
    # No /popular builder by default: tests in a rolled-back transaction share one connection, which
    # a background build must not use (tests/api/test_popular.py turns it on over committed data).
    settings = {"SQLALCHEMY_DATABASE_URI": database_url, "SECRET_KEY": SECRET, "TESTING": True}
    return create_app({**settings, "POPULAR_BUILD_AHEAD": 0, **overrides})


def migrate_and_seed(app: Flask, posts: int, seed: int = 7) -> None:
    from flask_migrate import upgrade

    from app.seed import seed as run_seed

    with app.app_context():
        upgrade(directory=str(REPO / "migrations"))
        run_seed(posts, seed=seed, progress=False)
        db.session.remove()


@pytest.fixture(scope="session")
def app(make_database, redis_server: Redis) -> Flask:  # type: ignore[no-untyped-def]
    """The app on PostgreSQL (schema from the migrations, a seeded base dataset) with its page
    cache on the real Redis, near cache on, as it runs in production."""
    application = build_app(make_database("readwire_test"), REDIS_URL=redis_server.url)
    migrate_and_seed(application, BASE_POSTS)
    return application


@pytest.fixture
def db_tx(app: Flask) -> Iterator[Connection]:
    """Run the test inside one outer transaction that is rolled back afterwards.

    Every session opened during the test (the test's own and each request's) binds to the
    same connection and commits only to a savepoint.
    """
    with app.app_context():
        engines = db._app_engines[app]  # Flask-SQLAlchemy's per-app engine map
        engine = engines[None]
        connection = engine.connect()
        outer = connection.begin()
        engines[None] = connection  # type: ignore[assignment]
        db.session.remove()
        db.session.session_factory.configure(join_transaction_mode="create_savepoint")
        try:
            yield connection
        finally:
            db.session.remove()
            engines[None] = engine
            outer.rollback()
            connection.close()


def empty_redis(server: Redis) -> None:
    """FLUSHDB (test isolation only; the app never flushes), then a PING: once it answers, the
    flush's invalidation push is on every near-counter connection (app/cache/near.py)."""
    if not server.is_running():
        server.restart()
    client = redis.Redis.from_url(server.url)
    try:
        client.flushdb()
        client.ping()
    finally:
        client.close()


def cold_cache(application: Flask) -> None:
    """Empty `application`'s page cache: flush its Redis, or give it a new in-process store."""
    from app.cache.store import LocalStore
    from app.extensions import page_cache

    url = application.config.get("REDIS_URL")
    if url:
        client = redis.Redis.from_url(url)
        try:
            client.flushdb()
            client.ping()  # the flush's push has reached every near-counter connection
        finally:
            client.close()
        return
    pages = page_cache.pages(application)
    pages.store = invalidation.invalidator(application).store = LocalStore()


@pytest.fixture
def fresh_cache(app: Flask, redis_server: Redis) -> None:
    """An empty page cache for this test (the database is rolled back after each test, so pages
    cached by one test must not leak into the next). A new epoch follows the flush, so no key of
    an earlier test can match, near copies included."""
    empty_redis(redis_server)
    invalidation.invalidator(app).pending = False  # nothing committed is waiting in the outbox


@pytest.fixture
def client(app: Flask, db_tx: Connection, fresh_cache: None) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def statements(app: Flask, db_tx: Connection) -> Iterator[list[str]]:
    """Every SQL statement sent to the database during the test, in order."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        seen.append(statement)

    with app.app_context():
        engine = db._app_engines[app][None]
        target = engine.engine if isinstance(engine, Connection) else engine
    event.listen(target, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(target, "before_cursor_execute", record)


@pytest.fixture
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scrypt at 1/32 of the production cost: same code path, much faster test accounts."""
    from werkzeug.security import generate_password_hash

    from app.services import auth as auth_service

    monkeypatch.setattr(
        auth_service, "generate_password_hash", lambda pw: generate_password_hash(pw, method="scrypt:1024:8:1")
    )


def visible_post_ids(where: str = "TRUE", params: dict[str, object] | None = None) -> list[int]:
    """The expected feed order, computed independently of the app's query code."""
    sql = (
        "SELECT p.id FROM posts p WHERE p.status = 'published' AND p.deleted_at IS NULL AND "
        f"{where} ORDER BY p.published_at DESC, p.id DESC"
    )
    return list(db.session.execute(text(sql), params or {}).scalars())
