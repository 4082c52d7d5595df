"""Byte stores behind the page cache: Redis for the real stack, a dict for the embedded default.

Every Redis call goes through a circuit breaker: after a few consecutive failures the cache is
skipped for a cool-down, so a dead or hung Redis costs one timeout per cool-down per worker, not
one per request. Errors never escape: a failed read is a miss, a failed write is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.cache.keys import EPOCH_KEY, GENERATION_PREFIX
from app.cache.near import GenerationMirror
from app.observability.metrics import CACHE_ERRORS

log = logging.getLogger(__name__)
T = TypeVar("T")


class Store(Protocol):
    def available(self) -> bool: ...
    def mget(self, keys: Sequence[str]) -> list[bytes | None] | None: ...
    def versions(self, keys: Sequence[str]) -> list[bytes | None] | None: ...
    def set(self, key: str, value: bytes, ttl: float) -> None: ...
    def add(self, key: str, value: bytes, ttl: float) -> bool: ...
    def delete(self, key: str) -> None: ...
    def incr(self, keys: Sequence[str]) -> bool: ...
    def count(self, key: str, ttl: int) -> int | None: ...
    def ping(self) -> bool: ...


class CircuitBreaker:
    """Closed -> open after `threshold` consecutive failures; one trial call after `cooldown` s."""

    def __init__(self, threshold: int, cooldown: float, on_recover: Callable[[], None] | None = None) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.on_recover = on_recover
        self.failures = 0
        self.opened_at = 0.0
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        if self.failures < self.threshold:
            return "closed"
        return "half-open" if time.monotonic() - self.opened_at >= self.cooldown else "open"

    def allow(self) -> bool:
        state = self.state
        if state != "half-open":
            return state == "closed"
        with self._lock:  # one trial call per cool-down
            if time.monotonic() - self.opened_at < self.cooldown:
                return False
            self.opened_at = time.monotonic()
            return True

    def success(self) -> None:
        if self.failures:
            recovered = self.failures >= self.threshold
            self.failures = 0
            if recovered and self.on_recover:
                self.on_recover()

    def failure(self) -> None:
        self.failures += 1
        if self.failures == self.threshold:
            self.opened_at = time.monotonic()
            log.warning("cache circuit opened after %d failures", self.failures)


class RedisStore:
    """redis-py with hiredis, a blocking pool sized for greenlets, and millisecond timeouts."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        pool_size: int,
        pool_wait: float,
        breaker: CircuitBreaker,
        mirror_trust: float = 0.0,
    ) -> None:
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=pool_wait,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        # No retries: a failed call is a miss, and the breaker decides when to try again.
        self.client = redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
        self.breaker = breaker
        # Version counters mirrored in-process (app/cache/near.py); 0 turns the mirror off.
        self.mirror_trust = mirror_trust
        self.mirror = (
            GenerationMirror(
                {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}, [GENERATION_PREFIX, EPOCH_KEY], mirror_trust
            )
            if mirror_trust > 0
            else None
        )

    def _call(self, fn: Callable[[], T], default: T) -> T:
        if not self.breaker.allow():
            return default
        try:
            result = fn()
        except (redis.RedisError, OSError) as exc:
            self.breaker.failure()
            CACHE_ERRORS.labels(type(exc).__name__).inc()
            log.warning("cache error: %s", type(exc).__name__)
            return default
        self.breaker.success()
        return result

    def available(self) -> bool:
        return self.breaker.state != "open"

    def mget(self, keys: Sequence[str]) -> list[bytes | None] | None:
        return self._call(lambda: cast("list[bytes | None]", self.client.mget(keys)), None)

    def versions(self, keys: Sequence[str]) -> list[bytes | None] | None:
        """Like mget, for version counters: from the tracked mirror when there is one."""
        mirror = self.mirror
        if mirror is None:
            return self.mget(keys)
        if not self.breaker.allow():
            return None
        try:
            values = mirror.mget(keys)
        except (redis.RedisError, OSError) as exc:
            mirror.reset()
            self.breaker.failure()
            CACHE_ERRORS.labels(type(exc).__name__).inc()
            log.warning("cache error (mirror): %s", type(exc).__name__)
            return None
        self.breaker.success()
        return values

    def set(self, key: str, value: bytes, ttl: float) -> None:
        self._call(lambda: self.client.set(key, value, px=max(1, int(ttl * 1000))), None)

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        return self._call(lambda: bool(self.client.set(key, value, px=max(1, int(ttl * 1000)), nx=True)), False)

    def delete(self, key: str) -> None:
        self._call(lambda: self.client.delete(key), None)

    def incr(self, keys: Sequence[str]) -> bool:
        def bump() -> bool:
            pipe = self.client.pipeline(transaction=True)
            for key in keys:
                pipe.incr(key)
            pipe.execute()
            if self.mirror is not None:
                # Barrier for the mirrors (app/cache/near.py): Redis writes the tracking pushes
                # of these INCRs in the same event-loop turn as their reply, possibly just after
                # it. A command sent after that reply is served in a later turn, so once its
                # answer is back every push has been written to every mirror's socket.
                self.client.ping()
            return True

        return self._call(bump, False)

    def count(self, key: str, ttl: int) -> int | None:
        """Increment a counter that expires `ttl` s after its first increment (rate limits)."""

        def bump() -> int:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(key, 0, ex=ttl, nx=True)
            pipe.incr(key)
            return int(pipe.execute()[1])

        return self._call(bump, None)

    def ping(self) -> bool:
        return bool(self._call(self.client.ping, False))


class LocalStore:
    """In-process store for the embedded default (one process): same semantics, no server."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def available(self) -> bool:
        return True

    def _get(self, key: str, now: float) -> bytes | None:
        hit = self._data.get(key)
        if hit is None or hit[1] <= now:
            return None
        return hit[0]

    def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        now = time.monotonic()
        with self._lock:
            return [self._get(k, now) for k in keys]

    def versions(self, keys: Sequence[str]) -> list[bytes | None]:
        return self.mget(keys)

    def _make_room(self) -> None:
        if len(self._data) > 50_000:  # bounded: drop expired entries, then the oldest half
            now = time.monotonic()
            self._data = {k: v for k, v in self._data.items() if v[1] > now}
            for k in list(self._data)[: len(self._data) // 2]:
                del self._data[k]

    def set(self, key: str, value: bytes, ttl: float) -> None:
        with self._lock:
            self._make_room()
            self._data[key] = (value, time.monotonic() + ttl)

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        with self._lock:
            if self._get(key, time.monotonic()) is not None:
                return False
            self._data[key] = (value, time.monotonic() + ttl)
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def incr(self, keys: Sequence[str]) -> bool:
        with self._lock:
            for key in keys:
                value = self._get(key, time.monotonic())
                self._data[key] = (str(int(value or 0) + 1).encode(), float("inf"))
        return True

    def count(self, key: str, ttl: int) -> int:
        with self._lock:
            self._make_room()  # one counter per client and window: many clients must not grow it
            now = time.monotonic()
            hit = self._data.get(key)
            current, expires = (int(hit[0]), hit[1]) if hit is not None and hit[1] > now else (0, now + ttl)
            self._data[key] = (str(current + 1).encode(), expires)
            return current + 1

    def ping(self) -> bool:
        return True


def make_store(config: dict[str, Any], on_recover: Callable[[], None]) -> Store:
    url = config.get("REDIS_URL")
    if not url:
        return LocalStore()
    breaker = CircuitBreaker(config["CACHE_BREAKER_THRESHOLD"], config["CACHE_BREAKER_COOLDOWN"], on_recover)
    return RedisStore(
        url,
        timeout=config["CACHE_TIMEOUT"],
        pool_size=config["CACHE_POOL_SIZE"],
        pool_wait=config["CACHE_POOL_WAIT"],
        breaker=breaker,
        mirror_trust=config["CACHE_MIRROR_TRUST"],
    )
