"""Redis away (stopped: a real server, really gone) with a real PostgreSQL: each app instance (its
own process state, as separate workers are) keeps serving its near copies, checked against the
generations the database keeps (app/cache/generations.py), and a write made through one instance
is never followed by the old page from another's copies, nor when Redis comes back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator

import pytest
from flask import Flask
from sqlalchemy import event, text

from app.cache import generations
from app.extensions import db, page_cache
from devstack.servers import Redis
from tests.cache.test_cache import FEED, retitle, top_post

POST_PAGE = "/api/v1/posts/{}"
# No retries of the INCRs nor a trust window to wait out: Redis is stopped, not failing over.
DOWN = {"CACHE_INVALIDATION_WAIT": 0.0, "CACHE_NEAR_TRUST": 0.0}


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    """A Redis server of this module's own: stopping it leaves the session's (other tests' apps) alone."""
    server = Redis.start(tmp_path_factory.mktemp("redis-degraded"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def on_own_redis(make_app: Callable[..., Flask], own_redis: Redis) -> Callable[..., Flask]:
    """Apps (make_app) on this module's Redis, running at the start of each test."""
    if not own_redis.is_running():
        own_redis.restart()
    return lambda **overrides: make_app(**{"REDIS_URL": own_redis.url, **DOWN, **overrides})


@pytest.fixture
def redis_down(own_redis: Redis) -> Iterator[Redis]:
    """This module's Redis stopped for the test's body, running again afterwards (empty: its data is gone)."""
    own_redis.stop()
    yield own_redis
    if not own_redis.is_running():
        own_redis.restart()


def read(app: Flask, url: str = FEED) -> tuple[str, str]:
    response = app.test_client().get(url)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    item = body["data"][0] if "data" in body else body
    return item["title"], response.headers["X-App-Cache"]


def page_queries(app: Flask) -> tuple[list[str], Callable[[], None]]:
    """The feed page statements (posts ... LIMIT) `app` runs from now on, and how to stop counting."""
    seen: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "FROM posts" in statement and "LIMIT" in statement:
            seen.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    return seen, lambda: event.remove(engine, "before_cursor_execute", record)


def test_with_redis_down_a_warm_page_is_served_from_the_near_copy_not_the_page_query(
    on_own_redis: Callable[..., Flask], redis_down: Redis
) -> None:
    app = on_own_redis()
    queries, stop = page_queries(app)
    try:
        outcomes = [read(app)[1] for _ in range(20)]
    finally:
        stop()
    assert outcomes[0] == "bypass"  # computed from the database (the breaker opens on the way)
    assert outcomes[-10:] == ["degraded_hit"] * 10, outcomes
    assert len(queries) <= 2, len(queries)  # the breaker's first failures may each compute once


def test_with_redis_down_a_write_through_one_process_is_seen_at_once_by_another(
    on_own_redis: Callable[..., Flask], redis_down: Redis
) -> None:
    writer, reader = on_own_redis(), on_own_redis()
    post = top_post(writer)
    for _ in range(5):
        read(reader)
        read(reader, POST_PAGE.format(post.id))
    assert read(reader) == (post.title, "degraded_hit")  # the reader's copy is warm
    assert read(reader, POST_PAGE.format(post.id)) == (post.title, "degraded_hit")
    for n in range(3):
        retitle(writer, post.id, f"Written with Redis down {n}")  # acknowledged: committed
        assert read(reader) == (f"Written with Redis down {n}", "bypass")
        assert read(reader, POST_PAGE.format(post.id))[0] == f"Written with Redis down {n}"
        assert read(reader) == (f"Written with Redis down {n}", "degraded_hit")


def until_redis_serves(app: Flask, timeout: float = 20.0) -> tuple[set[str], str]:
    """Read FEED until an answer comes through Redis again: the titles seen on the way, the last outcome."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        title, outcome = read(app)
        seen.add(title)
        if outcome in ("miss", "hit", "near_hit") or time.monotonic() > deadline:
            return seen, outcome
        time.sleep(0.02)


def test_no_stale_page_across_redis_going_and_coming_back_empty(
    on_own_redis: Callable[..., Flask], own_redis: Redis
) -> None:
    writer, reader = on_own_redis(), on_own_redis()
    redis_server = own_redis
    post = top_post(writer)
    assert read(reader)[0] == post.title  # Redis up: a near copy under Redis generations
    redis_server.stop()
    try:
        for _ in range(4):
            read(reader)
        assert read(reader) == (post.title, "degraded_hit")
        retitle(writer, post.id, "Written while Redis was gone")  # the INCRs stay in the outbox
    finally:
        redis_server.restart()  # back, with none of its data
    seen, outcome = until_redis_serves(reader)  # through the breaker's cool-down, then from Redis
    assert seen == {"Written while Redis was gone"}, (seen, outcome)
    assert outcome in ("miss", "hit", "near_hit")
    with writer.app_context():  # the reader drained the write's INCRs before it read from Redis
        assert db.session.execute(text("SELECT count(*) FROM cache_outbox")).scalar() == 0
    redis_server.stop()  # away again: the degraded copies of before the write are not current
    try:
        assert {read(reader)[0] for _ in range(10)} == {"Written while Redis was gone"}
        retitle(writer, post.id, "Written during the second outage")
        assert {read(reader)[0] for _ in range(10)} == {"Written during the second outage"}
    finally:
        redis_server.restart()
    seen, outcome = until_redis_serves(reader)
    assert seen == {"Written during the second outage"}, (seen, outcome)
    assert outcome in ("miss", "hit", "near_hit")


def test_a_rollback_bumps_no_database_generation(on_own_redis: Callable[..., Flask], redis_down: Redis) -> None:
    app = on_own_redis()
    post = top_post(app)
    for _ in range(4):
        read(app)
    with app.app_context():
        before = dict(db.session.execute(text("SELECT namespace, generation FROM cache_generations")).all())
        db.session.get(type(post), post.id).title = "Never committed"
        db.session.flush()
        db.session.rollback()
        after = dict(db.session.execute(text("SELECT namespace, generation FROM cache_generations")).all())
    assert after == before
    assert read(app) == (post.title, "degraded_hit")


def test_a_generations_read_arriving_while_one_is_in_flight_is_answered_by_a_later_query(
    on_own_redis: Callable[..., Flask],
) -> None:
    """Grouped reads (DatabaseGenerations): a caller joins only a query not yet sent, so a write
    committed before it arrived is in its answer even while an older query is still in flight."""
    app = on_own_redis()
    database = page_cache.pages(app).database
    assert database is not None
    original = database._query
    in_flight, release = threading.Event(), threading.Event()

    def slow_first(names: Iterable[str]) -> dict[str, int] | None:
        rows = original(names)  # this query's snapshot is taken now...
        if not in_flight.is_set():
            in_flight.set()
            release.wait(10)  # ...and its answer arrives only after the write below
        return rows

    database._query = slow_first  # type: ignore[method-assign]
    first: list[str | None] = []
    second: list[str | None] = []
    early = threading.Thread(target=lambda: first.append(database.token(["feed"])))
    early.start()
    assert in_flight.wait(10)
    with app.app_context(), db.engine.begin() as conn:
        generations.bump(conn, ["feed"])  # committed: acknowledged before the next caller arrives
    late = threading.Thread(target=lambda: second.append(database.token(["feed"])))
    late.start()
    deadline = time.monotonic() + 10
    while database._next is None and time.monotonic() < deadline:  # the late caller is waiting its turn
        time.sleep(0.005)
    release.set()
    early.join(10)
    late.join(10)
    assert first[0] is not None and second[0] is not None
    assert int(second[0].rpartition(":")[2]) == int(first[0].rpartition(":")[2]) + 1
