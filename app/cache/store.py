"""Byte stores behind the page cache: Redis for the real stack, a dict for the embedded default.

The page cache needs few operations, each one round trip:

- `versions`: the epoch and generation counters (from the near counters when they are on);
- `lookup`: the entry, or, when there is none, the fill lock (SET NX) and the page's address
  record, atomically (one Lua script), so a miss costs two round trips in all: this and `fill`;
- `fill`: the entry, its address record and the lock's release in one pipeline;
- `peek`: entry and lock state, for a reader waiting on another process's fill;
- `add` (a lock or the epoch), `incr` (invalidation: the generations and, next to them, the
  write's commit LSN, app/replicas.py), `lsns` (those LSNs), `ping` (readiness).

`primary` says which Redis primary (dataset) the counters come from (app/cache/discovery.py):
its tag is part of every page key, so a failover that loses acknowledged INCRs never brings
back the pages stored under the lost generations.

Every Redis call goes through a circuit breaker: after a few consecutive failures the cache is
skipped for a cool-down, so a dead or hung Redis costs one timeout per cool-down per worker, not
one per request. Errors never escape: a failed call answers None (unreachable), and the page
cache then serves from the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.exceptions import NoScriptError
from redis.retry import Retry

from app.cache.discovery import Primary, RedisTarget
from app.cache.keys import EPOCH_KEY, GENERATION_PREFIX
from app.cache.near import NearCounters
from app.compat import redis_cheap_checkout
from app.observability.metrics import CACHE_ERRORS

log = logging.getLogger(__name__)
T = TypeVar("T")


class Lookup(NamedTuple):
    value: bytes | None  # the entry, if there is one
    locked: bool  # no entry, and this caller took the fill lock
    record: bytes | None  # no entry: the page's address record, if any
    lsns: list[bytes | None] | None = None  # no entry: the LSN keys asked for, read in the same step


class Announcement(Protocol):
    """A message the store PUBLISHes once it has taken a bump (RedisStore.incr), and whether it did:
    app/push's doorbell, rung in the round trip that already serves as the near counters' barrier."""

    channel: str
    message: bytes
    sent: bool


class Store(Protocol):
    primary: Primary | None  # None: in-process, one dataset for the life of the process

    def versions(self, keys: Sequence[str]) -> list[bytes | None] | None: ...
    def lookup(
        self, key: str, lock: str, record_key: str, lock_ttl: float, lsn_keys: Sequence[str] = ()
    ) -> Lookup | None: ...
    def fill(self, key: str, value: bytes, ttl: float, record_key: str, record: bytes, lock: str) -> None: ...
    def peek(self, key: str, lock: str) -> tuple[bytes | None, bool] | None: ...
    def add(self, key: str, value: bytes, ttl: float) -> bool: ...
    def delete(self, key: str) -> None: ...
    def incr(
        self,
        keys: Sequence[str],
        lsn_keys: Sequence[str] = (),
        lsn: int = 0,
        *,
        force: bool = False,
        announce: Announcement | None = None,
    ) -> bool: ...
    def lsns(self, keys: Sequence[str]) -> list[bytes | None] | None: ...
    def ping(self) -> bool: ...
    def available(self) -> bool: ...


# KEYS: entry, lock, address record, then any LSN keys; ARGV: lock TTL (ms).
# Returns {entry} or {false, locked, record, {lsn...}}: a miss learns, atomically with finding no
# entry, the commit LSN of the last write of each of the page's namespaces (app/replicas.py).
_LOOKUP = """
local entry = redis.call('GET', KEYS[1])
if entry then return {entry} end
local locked = redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1])
local lsns = {}
if #KEYS > 3 then lsns = redis.call('MGET', unpack(KEYS, 4)) end
return {false, locked and 1 or 0, redis.call('GET', KEYS[3]) or false, lsns}
"""

# KEYS: generation keys, then (when ARGV[1] > 0) as many LSN keys; ARGV[1]: the write's commit
# LSN as a decimal integer. One INCR per generation, and each LSN key raised to the write's LSN
# (never lowered: writes may finish out of order), in one atomic step, so no reader sees a new
# generation without the LSN that goes with it.
_BUMP = """
local lsn = tonumber(ARGV[1])
local n = #KEYS
if lsn > 0 then n = n / 2 end
for i = 1, n do
  redis.call('INCR', KEYS[i])
  if lsn > 0 then
    local key = KEYS[n + i]
    if lsn > tonumber(redis.call('GET', key) or '0') then redis.call('SET', key, ARGV[1]) end
  end
end
return n
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


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
    """redis-py with hiredis, a blocking pool sized for greenlets, and millisecond timeouts; the
    primary found through REDIS_URL or Sentinel (app/cache/discovery.py)."""

    def __init__(
        self,
        target: RedisTarget | str,
        *,
        timeout: float,
        pool_size: int,
        pool_wait: float,
        breaker: CircuitBreaker,
        near_trust: float = 0.0,
        wait_replicas: int = 0,
        wait_timeout: float = 0.0,
        watch_interval: float = 1.0,
    ) -> None:
        if isinstance(target, str):
            target = RedisTarget(target)
        self.target = target
        self.primary: Primary | None = target.primary
        pool = target.pool(max_connections=pool_size, pool_wait=pool_wait, timeout=timeout)
        redis_cheap_checkout(pool)  # the pool's check of each connection it hands out, in C
        # No retries: a failed call is a miss, and the breaker decides when to try again.
        self.client = redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
        self._lookup = self.client.register_script(_LOOKUP)
        self._bump = self.client.register_script(_BUMP)
        self.breaker = breaker
        # WAIT after the INCRs (0 = off): a bump no replica acknowledged counts as not done (the
        # writer retries, app/cache/invalidation.py). The epoch already makes an INCR lost in a
        # crash failover harmless; WAIT also covers an old primary still answering (docs/scaling.md).
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = _ms(wait_timeout)
        # Version counters mirrored in-process (app/cache/near.py); 0 turns them off.
        self.near_trust = near_trust
        prefixes = [GENERATION_PREFIX, EPOCH_KEY]
        connect = target.connection_factory(timeout, protocol=3)
        self.near = NearCounters(connect, prefixes, near_trust, target.primary) if near_trust > 0 else None
        target.watch(watch_interval, self._moved)

    def _moved(self) -> None:
        """The Sentinels name another primary: forget the tracking connection and its copies."""
        if self.near is not None:
            self.near.reset()

    def _call(self, fn: Callable[[], T], default: T, *, force: bool = False) -> T:
        if not force and not self.breaker.allow():
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

    def _script(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA on one pooled connection (EVAL when the server has lost the script: a restart,
        SCRIPT FLUSH), without redis-py's Script and command wrappers around it (~a third of a
        lookup's client CPU). Any failure drops the connection."""
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
            try:
                return conn.read_response()
            except NoScriptError:  # one reply read: the connection is in step, run the source
                conn.send_command("EVAL", script.script, len(keys), *keys, *args)
                return conn.read_response()
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def versions(self, keys: Sequence[str]) -> list[bytes | None] | None:
        near = self.near
        if near is None:
            return self._call(lambda: cast("list[bytes | None]", self.client.mget(keys)), None)
        if not self.breaker.allow():
            return None
        try:
            values = near.mget(keys)
        except (redis.RedisError, OSError) as exc:
            near.reset()
            self.breaker.failure()
            CACHE_ERRORS.labels(type(exc).__name__).inc()
            log.warning("cache error (near counters): %s", type(exc).__name__)
            return None
        self.breaker.success()
        return values

    def lookup(
        self, key: str, lock: str, record_key: str, lock_ttl: float, lsn_keys: Sequence[str] = ()
    ) -> Lookup | None:
        def run() -> Lookup:
            reply: list[Any] = self._script(self._lookup, [key, lock, record_key, *lsn_keys], [_ms(lock_ttl)])
            if reply[0] is not None:
                return Lookup(reply[0], False, None)
            record = reply[2] if len(reply) > 2 else None
            return Lookup(None, bool(reply[1]), record, list(reply[3]) if lsn_keys else None)

        return self._call(run, None)

    def fill(self, key: str, value: bytes, ttl: float, record_key: str, record: bytes, lock: str) -> None:
        """SET the entry and its address record, DEL the fill lock: one write, three replies, on one
        pooled connection. The commands are packed and sent as redis-py's pipeline sends them, without
        the pipeline object around them (its per-command wrappers, queue and response callbacks were
        a third of a fill's client CPU: py-spy under 32 concurrent misses). Any failure drops the
        connection (replies may be left unread) and counts as the store's failure."""
        ms = _ms(ttl)
        commands = (("SET", key, value, "PX", ms), ("SET", record_key, record, "PX", ms), ("DEL", lock))

        def run() -> None:
            pool = self.client.connection_pool
            conn = pool.get_connection()
            try:
                conn.send_packed_command(conn.pack_commands(commands))
                for _ in commands:
                    conn.read_response()  # an error reply raises (ResponseError): disconnected below
            except BaseException:
                conn.disconnect()
                raise
            finally:
                pool.release(conn)

        self._call(run, None)

    def peek(self, key: str, lock: str) -> tuple[bytes | None, bool] | None:
        def run() -> tuple[bytes | None, bool]:
            value, held = cast("list[bytes | None]", self.client.mget([key, lock]))
            return value, held is not None

        return self._call(run, None)

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        return self._call(lambda: bool(self.client.set(key, value, px=_ms(ttl), nx=True)), False)

    def delete(self, key: str) -> None:
        self._call(lambda: self.client.delete(key), None)

    def incr(
        self,
        keys: Sequence[str],
        lsn_keys: Sequence[str] = (),
        lsn: int = 0,
        *,
        force: bool = False,
        announce: Announcement | None = None,
    ) -> bool:
        """INCR each key and raise each LSN key to `lsn` (when > 0), atomically. `force`: past an
        open breaker (a writer retrying its invalidation). `announce`: PUBLISHed once the bump is
        taken (and replicated, with WAIT), in place of the barrier PING; `announce.sent` says so."""

        def bump() -> bool:
            self._script(self._bump, [*keys, *lsn_keys] if lsn > 0 else keys, [lsn if lsn > 0 else 0])
            if self.wait_replicas:
                acked = self.client.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
                if int(acked) < self.wait_replicas:  # not on a replica: a failover could lose it
                    CACHE_ERRORS.labels("WaitTimeout").inc()
                    return False
            # Barrier for the near counters (app/cache/near.py): Redis writes the tracking pushes of
            # these INCRs in the same event-loop turn as their reply, possibly just after it. A
            # command sent after that reply is served in a later turn, so once its answer is back
            # every push has been written to every process's socket. An announcement is that
            # command when there is one: one round trip fewer for a write that rings the doorbell,
            # and no subscriber hears the doorbell before the pushes are on every socket.
            if announce is not None:
                self.client.publish(announce.channel, announce.message)
                announce.sent = True
            elif self.near is not None:
                self.client.ping()
            return True

        return self._call(bump, False, force=force)

    def lsns(self, keys: Sequence[str]) -> list[bytes | None] | None:
        """The LSN keys from Redis itself (never from near copies: they are not tracked)."""
        return self._call(lambda: cast("list[bytes | None]", self.client.mget(keys)), None)

    def ping(self) -> bool:
        return bool(self._call(self.client.ping, False))

    def available(self) -> bool:
        """Worth calling now: the breaker is closed (no I/O; an open or half-open one says no)."""
        return self.breaker.failures < self.breaker.threshold


class LocalStore:
    """In-process store for the embedded default (one process): same semantics, no server."""

    near_trust = 0.0
    primary: Primary | None = None

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def _get(self, key: str, now: float) -> bytes | None:
        hit = self._data.get(key)
        if hit is None or hit[1] <= now:
            return None
        return hit[0]

    def _set(self, key: str, value: bytes, ttl: float) -> None:
        if len(self._data) > 50_000:  # bounded: drop expired entries, then the oldest half
            now = time.monotonic()
            self._data = {k: v for k, v in self._data.items() if v[1] > now}
            for k in list(self._data)[: len(self._data) // 2]:
                del self._data[k]
        self._data[key] = (value, time.monotonic() + ttl)

    def versions(self, keys: Sequence[str]) -> list[bytes | None]:
        now = time.monotonic()
        with self._lock:
            return [self._get(k, now) for k in keys]

    def lookup(self, key: str, lock: str, record_key: str, lock_ttl: float, lsn_keys: Sequence[str] = ()) -> Lookup:
        now = time.monotonic()
        with self._lock:
            value = self._get(key, now)
            if value is not None:
                return Lookup(value, False, None)
            locked = self._get(lock, now) is None
            if locked:
                self._set(lock, b"1", lock_ttl)
            lsns = [self._get(k, now) for k in lsn_keys] if lsn_keys else None
            return Lookup(None, locked, self._get(record_key, now), lsns)

    def fill(self, key: str, value: bytes, ttl: float, record_key: str, record: bytes, lock: str) -> None:
        with self._lock:
            self._set(key, value, ttl)
            self._set(record_key, record, ttl)
            self._data.pop(lock, None)

    def peek(self, key: str, lock: str) -> tuple[bytes | None, bool]:
        now = time.monotonic()
        with self._lock:
            return self._get(key, now), self._get(lock, now) is not None

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        with self._lock:
            if self._get(key, time.monotonic()) is not None:
                return False
            self._set(key, value, ttl)
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def incr(
        self,
        keys: Sequence[str],
        lsn_keys: Sequence[str] = (),
        lsn: int = 0,
        *,
        force: bool = False,
        announce: Announcement | None = None,  # one process: nobody to announce to (never sent)
    ) -> bool:
        with self._lock:
            now = time.monotonic()
            for key in keys:
                value = self._get(key, now)
                self._data[key] = (str(int(value or 0) + 1).encode(), float("inf"))
            for key in lsn_keys if lsn > 0 else ():
                if lsn > int(self._get(key, now) or 0):
                    self._data[key] = (str(lsn).encode(), float("inf"))
        return True

    def lsns(self, keys: Sequence[str]) -> list[bytes | None]:
        return self.versions(keys)

    def ping(self) -> bool:
        return True

    def available(self) -> bool:
        return True


def make_store(config: dict[str, Any], on_recover: Callable[[], None]) -> Store:
    target = RedisTarget.from_config(config)
    if target is None:
        return LocalStore()
    breaker = CircuitBreaker(config["CACHE_BREAKER_THRESHOLD"], config["CACHE_BREAKER_COOLDOWN"], on_recover)
    return RedisStore(
        target,
        timeout=config["CACHE_TIMEOUT"],
        pool_size=config["CACHE_POOL_SIZE"],
        pool_wait=config["CACHE_POOL_WAIT"],
        breaker=breaker,
        near_trust=config["CACHE_NEAR_TRUST"],
        wait_replicas=config["CACHE_WAIT_REPLICAS"],
        wait_timeout=config["CACHE_WAIT_TIMEOUT"],
        watch_interval=config["REDIS_SENTINEL_CHECK_INTERVAL"],
    )
