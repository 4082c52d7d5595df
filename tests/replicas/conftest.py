"""Replica reads against a real streaming replica of the session's PostgreSQL (pg_basebackup,
hot standby), with the page cache on the real Redis, on committed data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from flask import Flask
from sqlalchemy import event

from app.config import psycopg_url
from app.extensions import db, replicas
from app.replicas import ReadRouter
from devstack.servers import Postgres, Redis, traversable_tmpdir
from tests.conftest import build_app, migrate_and_seed
from tests.stack.conftest import wait_for

DBNAME = "readwire_replicas"


@pytest.fixture(scope="module")
def primary_url(pg_server: Postgres | None, make_database) -> str:  # type: ignore[no-untyped-def]
    if pg_server is None:
        pytest.skip("needs the session's own PostgreSQL (TEST_DATABASE_URL is set): a replica is made of it")
    url: str = make_database(DBNAME)
    migrate_and_seed(build_app(url), 120, seed=5)
    return url


def start_replica(primary: Postgres, base: Path, slot: str) -> Postgres:
    return Postgres.replica_of(primary, base, slot=slot)  # hot standby is PostgreSQL's default


@pytest.fixture(scope="module")
def replica_server(pg_server: Postgres, primary_url: str) -> Iterator[Postgres]:
    with traversable_tmpdir("readwire-replica-") as base:
        replica = start_replica(pg_server, base / "replica", "test_replica_1")
        try:
            yield replica
        finally:
            replica.stop()
            pg_server.psql("SELECT pg_drop_replication_slot('test_replica_1')")


@pytest.fixture(scope="module")
def replica_url(replica_server: Postgres) -> str:
    return replica_server.url_for(DBNAME)


def sql(url: str, statement: str, *params: Any) -> Any:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(statement, params).fetchone()
        return None if row is None else row[0]


def primary_position(primary_url: str) -> int:
    return int(sql(primary_url, "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint"))


def replayed(replica_url: str) -> int:
    return int(sql(replica_url, "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint"))


def caught_up(primary_url: str, replica_url: str) -> bool:
    return replayed(replica_url) >= primary_position(primary_url)


class Paused:
    """Replay paused on a replica for the block (WAL still received), resumed after it."""

    def __init__(self, replica_url: str) -> None:
        self.url = replica_url

    def __enter__(self) -> Paused:
        sql(self.url, "SELECT pg_wal_replay_pause()")
        assert wait_for(lambda: sql(self.url, "SELECT pg_get_wal_replay_pause_state()") == "paused", 30)
        return self

    def __exit__(self, *exc: object) -> None:
        sql(self.url, "SELECT pg_wal_replay_resume()")


@pytest.fixture
def redis_client(redis_server: Redis) -> Iterator[redis.Redis]:
    if not redis_server.is_running():
        redis_server.restart()
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()  # test isolation only; the app never flushes
    yield client
    client.close()


@pytest.fixture
def make_app(primary_url: str, replica_url: str, redis_server: Redis, redis_client: redis.Redis) -> Iterator[Any]:
    """Apps on the primary with the replica for page fills. Replicas are never left out for a
    stalled replay here (the LSN rule alone is under test) unless a test asks."""
    made: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        settings = {
            "REDIS_URL": redis_server.url,
            "DATABASE_REPLICA_URLS": [psycopg_url(replica_url)],
            "DB_REPLICA_MAX_STALL": 3600.0,
            "DB_REPLICA_CHECK_INTERVAL": 3600.0,  # no health rounds unless a test runs one
            "CACHE_BREAKER_COOLDOWN": 0.2,
            **overrides,
        }
        application = build_app(primary_url, **settings)
        made.append(application)
        return application

    yield make
    for application in made:
        with application.app_context():
            db.engine.dispose()
            router = replicas.router(application)
            for replica in router.replicas if router else ():
                replica.engine.dispose()


def router_of(application: Flask) -> ReadRouter:
    router = replicas.router(application)
    assert router is not None
    return router


class Statements:
    """The app's statements sent to the primary and to the replica (the router's own position
    checks, pg_* functions, left out)."""

    def __init__(self, application: Flask) -> None:
        with application.app_context():
            self.engines = {"primary": db.engine, "replica": router_of(application).replicas[0].engine}
        self.seen: dict[str, list[str]] = {"primary": [], "replica": []}
        self._listeners = []
        for name, engine in self.engines.items():

            def record(conn: Any, cursor: Any, statement: str, *args: Any, _name: str = name) -> None:
                if "pg_" not in statement:
                    self.seen[_name].append(statement)

            event.listen(engine, "before_cursor_execute", record)
            self._listeners.append((engine, record))

    def clear(self) -> None:
        for seen in self.seen.values():
            seen.clear()

    def remove(self) -> None:
        for engine, record in self._listeners:
            event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def statements() -> Iterator[Any]:
    made: list[Statements] = []

    def watch(application: Flask) -> Statements:
        made.append(Statements(application))
        return made[-1]

    yield watch
    for watched in made:
        watched.remove()
