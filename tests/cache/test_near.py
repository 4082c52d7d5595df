"""The near cache (app/cache/near.py) against a real Redis: counter copies follow every change
at once, a hung Redis is never trusted past the window, near entries are bounded."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis
from flask import Flask
from redis.connection import Connection

from app.cache.discovery import RedisTarget
from app.cache.keys import EPOCH_KEY, GENERATION_PREFIX, generation_key
from app.cache.near import NearCounters, NearEntries
from app.cache.store import CircuitBreaker, RedisStore
from app.extensions import db
from devstack.servers import Redis
from tests.cache.conftest import CACHE_CONFIG
from tests.cache.test_cache import FEED, first_title, retitle, top_post
from tests.conftest import build_app


def tracking(server: Redis) -> Callable[[], Connection]:
    """New tracking connections to `server`, made as the app makes them (RESP3, checked)."""
    return RedisTarget(server.url).connection_factory(0.05, protocol=3)


@pytest.fixture
def counters(redis_server: Redis, redis_client: redis.Redis) -> Iterator[NearCounters]:
    m = NearCounters(tracking(redis_server), [GENERATION_PREFIX, EPOCH_KEY], trust=60.0)
    yield m
    m.reset()


def test_near_counters_sees_every_increment_at_once(counters: NearCounters, redis_server: Redis) -> None:
    """Through the writers' primitive (RedisStore.incr, which ends with the push barrier)."""
    store = RedisStore(redis_server.url, timeout=0.05, pool_size=4, pool_wait=0.1,
                       breaker=CircuitBreaker(3, 1.0), near_trust=0.1)  # fmt: skip
    key = generation_key("feed")
    assert counters.mget([key]) == [None]
    for n in range(1, 301):  # no sleep anywhere: the push must already be there
        assert store.incr([key])
        assert counters.mget([key]) == [str(n).encode()]


def test_near_counters_is_exact_without_round_trips(counters: NearCounters, redis_client: redis.Redis) -> None:
    keys = [generation_key(f"cat:{i}") for i in range(5)]
    redis_client.incr(keys[2])
    assert counters.mget(keys) == [None, None, b"1", None, None]
    redis_client.config_resetstat()
    for _ in range(200):
        assert counters.mget(keys) == [None, None, b"1", None, None]
    assert redis_client.info("stats")["total_commands_processed"] <= 2  # CONFIG RESETSTAT + INFO itself


def test_near_counters_forgets_everything_on_flush(counters: NearCounters, redis_client: redis.Redis) -> None:
    key = generation_key("feed")
    redis_client.incr(key)
    assert counters.mget([key]) == [b"1"]
    redis_client.flushdb()
    redis_client.ping()  # the barrier writers use: the push is on the counters's socket by its reply
    assert counters.mget([key]) == [None]


def test_near_counters_does_not_trust_a_hung_redis_past_its_window(
    redis_server: Redis, redis_client: redis.Redis
) -> None:
    key = generation_key("feed")
    redis_client.incr(key)
    m = NearCounters(tracking(redis_server), [GENERATION_PREFIX], 0.1)
    assert m.mget([key]) == [b"1"]
    redis_server.pause()
    try:
        assert m.mget([key]) == [b"1"]  # inside the window: the copy
        time.sleep(0.11)
        with pytest.raises((redis.TimeoutError, TimeoutError)):
            m.mget([key])  # past it: asks Redis, which does not answer
    finally:
        redis_server.resume()
        m.reset()


def test_write_while_redis_hangs_is_seen_by_a_process_that_trusted_its_mirror(
    cached_app: Flask, cache_db: str, redis_server: Redis
) -> None:
    """Reader and writer are separate app instances (separate near caches), as two
    gunicorn workers are. The reader warms its copies right before Redis hangs; the write is
    acknowledged only after the reader's trust window, so the reader's next read is fresh."""
    reader = build_app(cache_db, REDIS_URL=redis_server.url, **CACHE_CONFIG)
    post = top_post(cached_app)
    assert first_title(reader) == post.title
    assert first_title(reader) == post.title  # now a near hit: counters copied, entry in-process
    redis_server.pause()
    try:
        started = time.monotonic()
        retitle(cached_app, post.id, "Written while the reader trusted its counters")
        acknowledged = time.monotonic() - started
        assert first_title(reader) == "Written while the reader trusted its counters"
        assert acknowledged >= cached_app.config["CACHE_NEAR_TRUST"]
    finally:
        redis_server.resume()
        with reader.app_context():
            db.engine.dispose()


def test_near_hits_cost_no_redis_commands(cached_app: Flask, redis_client: redis.Redis) -> None:
    client = cached_app.test_client()
    body = client.get(FEED).get_data()
    redis_client.config_resetstat()
    for _ in range(100):
        assert client.get(FEED).get_data() == body
    # Only the near counters' trust refresh (one MGET per 100 ms window) may reach Redis.
    calls = redis_client.info("commandstats")
    served = sum(v["calls"] for k, v in calls.items() if k not in ("cmdstat_config", "cmdstat_info"))
    assert served <= 10


def test_near_entries_are_bounded_by_bytes() -> None:
    near = NearEntries(max_bytes=1000)
    for i in range(20):
        near.put(f"k{i}", i, 100)
    assert near.get("k0") is None and near.get("k19") == 19
    assert sum(near.get(f"k{i}") is not None for i in range(20)) == 10
    near.put("huge", "x", 500)  # larger than an eighth of the budget: never kept
    assert near.get("huge") is None
