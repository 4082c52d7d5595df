"""Redis high availability on real servers: a primary, a replica and three Sentinels started by
the test. The app finds the primary through Sentinel (page cache, near counters, rate limiter),
follows a failover, refuses a replica as primary, never serves a page stored under a generation
the new primary lost, and a write made while the primary is gone waits for its replacement."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from flask import Flask

from app.cache.keys import generation_key
from app.extensions import db, limiter, page_cache
from devstack.cluster import _link_up, _sentinel_ready, redis_role, sentinel_primary
from devstack.servers import HOST, Redis, Sentinel
from tests.cache.conftest import CACHE_CONFIG
from tests.cache.test_cache import FEED, first_title, retitle, top_post
from tests.conftest import build_app
from tests.stack.conftest import wait_for

MASTER = "rwtest"


@dataclass
class Group:
    primary: Redis
    replica: Redis
    sentinels: list[Sentinel]

    @property
    def addresses(self) -> str:
        return ",".join(f"{HOST}:{s.port}" for s in self.sentinels)

    def named_primary(self) -> int | None:
        """The primary's port if every Sentinel names the same one."""
        named = {sentinel_primary(s.port, MASTER) for s in self.sentinels}
        return next(iter(named))[1] if len(named) == 1 and None not in named else None  # type: ignore[index]


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Group]:
    primary = Redis.start(tmp_path / "redis-1")
    replica = Redis.start(tmp_path / "redis-2", config={"replicaof": f"{HOST} {primary.port}"})
    sentinels: list[Sentinel] = []
    try:
        assert wait_for(lambda: _link_up(replica.port), 30)
        watch = {"master": MASTER, "host": HOST, "port": str(primary.port), "quorum": "2",
                 "down-after-milliseconds": "1000", "failover-timeout": "10000"}  # fmt: skip
        sentinels = [Sentinel.start(tmp_path / f"sentinel-{i}", config=watch) for i in range(3)]
        assert wait_for(lambda: all(_sentinel_ready(s.port, MASTER, 2) for s in sentinels), 60, 0.2)
        yield Group(primary, replica, sentinels)
    finally:
        for server in [*sentinels, replica, primary]:
            server.stop()


def make_app(cache_db: str, group: Group, **overrides: object) -> Flask:
    settings = {**CACHE_CONFIG, "REDIS_URL": None, "REDIS_SENTINELS": group.addresses,
                "REDIS_SENTINEL_MASTER": MASTER, **overrides}  # fmt: skip
    return build_app(cache_db, **settings)


def fail_over(group: Group) -> None:
    """SENTINEL FAILOVER: the replica promoted, the old primary made its replica (its clients cut)."""
    with redis.Redis(port=group.sentinels[0].port) as sentinel:
        sentinel.execute_command("SENTINEL", "FAILOVER", MASTER)
    assert wait_for(
        lambda: group.named_primary() == group.replica.port and redis_role(group.replica.port) == "master", 60
    )


def test_the_cache_follows_a_failover_through_sentinel(cache_db: str, group: Group) -> None:
    app = make_app(cache_db, group)
    try:
        post = top_post(app)
        assert first_title(app) == post.title  # filled; counters copied
        store = page_cache.pages(app).store
        assert store.primary is not None
        tag, switches = store.primary.tag, store.primary.switches
        fail_over(group)

        # The old primary still answers until Sentinel demotes it; the app notices the Sentinels
        # name another one, reconnects, and its pages are keyed under the new dataset's tag.
        def moved() -> bool:
            assert app.test_client().get(FEED).status_code == 200
            return store.primary.tag != tag  # type: ignore[union-attr]

        assert wait_for(moved, 30)
        assert store.primary.switches == switches + 1
        retitle(app, post.id, "After the failover")
        assert first_title(app) == "After the failover"
        with redis.Redis(port=group.replica.port) as promoted:
            assert int(promoted.get(generation_key("feed")) or 0) >= 1  # the write's INCR went there
        # The rate limiter found it too (same discovery).
        limits = limiter.limits(app)
        assert limits is not None and limits.shared is not None
        assert limits.shared.count("rw:rl:probe", 60) == 1
        with redis.Redis(port=group.replica.port) as promoted:
            assert promoted.get("rw:rl:probe") == b"1"
    finally:
        with app.app_context():
            db.engine.dispose()


def test_pages_stored_under_a_generation_the_new_primary_lost_are_never_served(cache_db: str, group: Group) -> None:
    """Asynchronous replication: the old primary acknowledged an INCR its replica never got. After
    the failover the new primary has the pre-write generation and, replicated long before, the
    pre-write page under it."""
    writer, reader = make_app(cache_db, group), make_app(cache_db, group)
    try:
        post = top_post(writer)
        assert first_title(reader) == post.title  # the pre-write page, stored and replicated
        with redis.Redis(port=group.primary.port) as old:
            before = {k: old.get(k) for k in old.scan_iter("rw:gen:*")}
            old.wait(1, 2000)
        retitle(writer, post.id, "Acknowledged, then lost by the failover")
        assert first_title(reader) == "Acknowledged, then lost by the failover"
        fail_over(group)
        with redis.Redis(port=group.replica.port) as promoted:  # what losing the INCRs leaves behind
            for key in promoted.scan_iter("rw:gen:*"):
                if key not in before:
                    promoted.delete(key)
            for key, value in before.items():
                promoted.set(key, value)
            promoted.ping()
            assert promoted.get(generation_key("feed")) == before.get(generation_key("feed").encode())
            new_replid = promoted.info("replication")["master_replid"]
        for app in (reader, writer):  # each process on the new primary (its watcher saw it move)
            store = page_cache.pages(app).store
            assert wait_for(lambda store=store: store.ping() and store.primary.replid == new_replid, 30)
        for app in (reader, writer):  # the first read already, and every one after
            for _ in range(20):
                assert first_title(app) == "Acknowledged, then lost by the failover"
    finally:
        for app in (writer, reader):
            with app.app_context():
                db.engine.dispose()


def test_a_replica_is_never_taken_for_the_primary(cache_db: str, group: Group) -> None:
    app = build_app(cache_db, REDIS_URL=group.replica.url, **CACHE_CONFIG)
    try:
        response = app.test_client().get(FEED)
        assert response.status_code == 200 and response.headers["X-App-Cache"] == "bypass"
        assert page_cache.pages(app).store.primary.replid is None  # type: ignore[union-attr]
    finally:
        with app.app_context():
            db.engine.dispose()


def test_a_write_while_the_primary_is_gone_waits_for_its_replacement(cache_db: str, group: Group) -> None:
    """SIGKILL of the primary: the write's INCRs fail until the Sentinels promote the replica; the
    write keeps trying (CACHE_INVALIDATION_WAIT) and is acknowledged once they are on it."""
    writer = make_app(cache_db, group, CACHE_INVALIDATION_WAIT=30.0)
    reader = make_app(cache_db, group)
    try:
        post = top_post(writer)
        assert first_title(reader) == post.title
        os.kill(group.primary.proc.pid, signal.SIGKILL)
        group.primary.proc.wait(10)
        done = threading.Event()
        took: list[float] = []

        def write() -> None:
            started = time.monotonic()
            retitle(writer, post.id, "Waited for the new primary")
            took.append(time.monotonic() - started)
            done.set()

        threading.Thread(target=write, daemon=True).start()
        assert done.wait(60), "the write never returned"
        promoted_by_then = group.named_primary() == group.replica.port
        assert promoted_by_then, "acknowledged before a new primary existed"
        with redis.Redis(port=group.replica.port) as promoted:
            assert int(promoted.get(generation_key(f"post:{post.id}")) or 0) >= 1
        assert took[0] > 0.5  # it did wait (down-after alone is 1 s)
        assert wait_for(lambda: first_title(reader) == "Waited for the new primary", 30)
    finally:
        for app in (writer, reader):
            with app.app_context():
                db.engine.dispose()
