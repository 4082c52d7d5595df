"""What a write waits for between its COMMIT and its doorbell (issue 13). Every round trip there is a
wait during which a gevent worker runs its other greenlets first: traced in the streamers scenario, the
late writes spent most of that time on other greenlets' CPU. Now the doorbell (Redis PUBLISH) follows the
COMMIT after the commit's WAL position (autocommit) and the generations' bump only: it is sent as the near
counters' barrier, in place of the PING that followed the bump, and the outbox rows are deleted after it
(autocommit). It was BEGIN, the DELETE that read the position, the bump, PING, COMMIT, then PUBLISH."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import redis
from flask import Flask
from psycopg.pq import TransactionStatus
from redis.connection import AbstractConnection
from sqlalchemy import event, text

from app.extensions import db, invalidation, push
from app.push.hub import CHANNEL
from tests.push.conftest import WAIT, a_category, an_author, create


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Flask], list[str]]]:
    """Every round trip of this process to PostgreSQL (BEGIN, each statement's first words, COMMIT:
    the ones psycopg really sends) and every Redis command sent alone (not pipelines), in order."""
    seen: list[str] = []
    send = AbstractConnection.send_command

    def sent(self: AbstractConnection, *args: Any, **kwargs: Any) -> Any:
        name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        seen.append(f"redis {name.upper()}")
        return send(self, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_command", sent)
    engines: list[Any] = []

    def statement(conn: Any, cursor: Any, sql: str, *_: Any) -> None:
        driver = conn.connection.driver_connection
        if not driver.autocommit and driver.info.transaction_status == TransactionStatus.IDLE:
            seen.append("BEGIN")
        seen.append(" ".join(sql.split()[:4]))

    def commit(conn: Any) -> None:
        if conn.connection.driver_connection.info.transaction_status != TransactionStatus.IDLE:
            seen.append("COMMIT")

    def start(app: Flask) -> list[str]:
        seen.clear()
        with app.app_context():
            engine = db.engine
        event.listen(engine, "before_cursor_execute", statement)
        event.listen(engine, "commit", commit)
        engines.append(engine)
        return seen

    yield start
    for engine in engines:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "commit", commit)


def test_the_doorbell_is_the_bumps_barrier_and_comes_before_the_outbox_commit(
    make_app: Callable[..., Flask], round_trips: Callable[[Flask], list[str]], redis_server: Any
) -> None:
    app = make_app()
    author, category = an_author(app), a_category(app)
    listener = redis.Redis.from_url(redis_server.url).pubsub()
    listener.subscribe(CHANNEL)
    assert listener.get_message(timeout=WAIT) is not None  # the subscription is confirmed
    create(app, author, "Warm-up: the pools hold their connections", category)
    assert listener.get_message(timeout=WAIT) is not None
    seen = round_trips(app)

    post_id = create(app, author, "Rung with the bump", category)

    events = next(i for i, step in enumerate(seen) if step.startswith("INSERT INTO post_events"))
    committed = seen.index("COMMIT", events)
    rung = seen.index("redis PUBLISH", committed)
    position = "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint"
    assert seen[committed + 1 : rung] == [position, "redis EVALSHA"]
    # The outbox rows are deleted after the doorbell (in autocommit), and nothing rings it again.
    assert seen[rung + 1 :] == ["DELETE FROM cache_outbox WHERE"], seen[rung:]
    assert seen.count("redis PUBLISH") == 1, seen
    assert "redis PING" not in seen[committed:], seen[committed:]
    with app.app_context():
        assert db.session.execute(text("SELECT count(*) FROM cache_outbox")).scalar() == 0
        db.session.remove()
    # What the other processes hear: this write's event, carried in the message.
    message = listener.get_message(timeout=WAIT)
    assert message is not None and message["type"] == "message", message
    carried = orjson.loads(message["data"])["e"]
    assert [row[1] for row in carried] == ["post.created"], carried
    assert orjson.loads(carried[0][3])["post"]["id"] == post_id
    listener.close()


def test_a_write_bumps_through_an_open_breaker_and_rings_the_doorbell_with_it(
    make_app: Callable[..., Flask], round_trips: Callable[[Flask], list[str]]
) -> None:
    """The store answers, but this process's breaker is still cooling down from an outage: the write
    tries the store all the same (a write that skipped its bump left other processes serving pages
    without it until a drain swept the outbox)."""
    app = make_app()
    author, category = an_author(app), a_category(app)
    create(app, author, "Warm-up: the pools hold their connections", category)
    invalidator = invalidation.invalidator(app)
    assert invalidator.store is not None
    breaker = invalidator.store.breaker  # type: ignore[attr-defined]
    breaker.failures, breaker.opened_at = breaker.threshold, float("inf")  # open for good
    invalidator.retry_for = 0.0
    seen = round_trips(app)

    create(app, author, "Bumped through an open breaker", category)

    committed = seen.index("COMMIT", next(i for i, s in enumerate(seen) if s.startswith("INSERT INTO post_events")))
    assert seen[committed + 2 : committed + 4] == ["redis EVALSHA", "redis PUBLISH"], seen[committed:]
    assert seen[committed:].count("redis PUBLISH") == 1, seen[committed:]
    with app.app_context():
        assert db.session.execute(text("SELECT count(*) FROM cache_outbox")).scalar() == 0
        db.session.remove()


def test_without_the_store_the_publisher_still_rings_the_doorbell(
    make_app: Callable[..., Flask], round_trips: Callable[[Flask], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that cannot take the bump sends no doorbell with it: the write's own hook rings it
    (Redis when the Publisher's breaker lets it, PostgreSQL NOTIFY otherwise)."""
    app = make_app()
    author, category = an_author(app), a_category(app)
    assert push.state(app).publisher.client is not None
    invalidator = invalidation.invalidator(app)
    assert invalidator.store is not None
    invalidator.retry_for = 0.0
    create(app, author, "Warm-up: the pools hold their connections", category)

    def unreachable(*_: Any) -> Any:
        raise redis.ConnectionError("the store is down")

    monkeypatch.setattr(invalidator.store, "_script", unreachable)
    seen = round_trips(app)

    create(app, author, "Rung by the publisher", category)

    committed = seen.index("COMMIT", next(i for i, s in enumerate(seen) if s.startswith("INSERT INTO post_events")))
    assert "redis EVALSHA" not in seen[committed:], seen[committed:]
    assert seen[committed:].count("redis PUBLISH") == 1, seen[committed:]
    assert invalidator.pending  # the rows stay for the drain
