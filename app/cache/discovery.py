"""Finding the Redis primary, and knowing which primary it is.

Every Redis connection the app opens (the page cache's pool, the near cache's tracking
connection, the rate limiter's pool) comes from here: from REDIS_URL, or, with REDIS_SENTINELS
set, from redis-py's Sentinel support (each new connection asks the Sentinels for the current
primary of REDIS_SENTINEL_MASTER; connections to a demoted or dead primary fail and are made
again). Either way every connection, before its first command, runs `INFO replication`:

- a server that is not a primary (a replica a stale Sentinel answer pointed at) is refused;
- the primary's `master_replid` identifies the dataset. A promoted replica gets a new one (so
  does a primary restarted empty), and Redis replicates asynchronously: an INCR the old primary
  acknowledged may be missing on the new one, bringing back a pre-write generation. So the
  replid is part of every page key (app/cache/pages.py): pages stored under another primary's
  dataset are never read again, and a process that meets a new replid tells its listeners
  (near copies dropped, the replica-read LSN floor raised, the outbox drained) before the
  connection that met it is used.

Connections are long-lived, and a primary that Sentinel replaced without it dying (a manual
failover, a partition) keeps answering them until Sentinel demotes it. So each process also asks
the Sentinels every REDIS_SENTINEL_CHECK_INTERVAL s which primary they name; when it moves, every
pooled connection is closed (the next command connects to the new one) and `on_moved` runs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.connection import BlockingConnectionPool, Connection, ConnectionPool
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

log = logging.getLogger(__name__)


class SentinelBlockingConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel discovery with BlockingConnectionPool's semantics (a greenlet waits for a free
    connection, up to the pool's timeout, instead of failing at once)."""


class Primary:
    """Which Redis primary (dataset) this process talks to; tells listeners when it changes."""

    def __init__(self) -> None:
        self.replid: str | None = None
        self.tag = b""  # what page keys carry: b"." + the replid's first 12 hex digits
        self.switches = 0  # how many primaries this process has met (first included)
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def on_change(self, listener: Callable[[], None]) -> None:
        """`listener()` runs when a connection meets a primary other than the current one (the
        first one included), before that connection is used. It must not do I/O."""
        self._listeners.append(listener)

    def observe(self, replid: str) -> None:
        with self._lock:
            if replid == self.replid:
                return
            previous, self.replid = self.replid, replid
            # Listeners first, then the new tag: a reader that sees the new tag also finds every
            # listener's effect (the floor raised, the copies gone).
            for listener in self._listeners:
                listener()
            self.tag = b"." + replid[:12].encode()
            self.switches += 1
        if previous is not None:
            log.warning("redis primary changed (replid %s -> %s): new cache epoch", previous[:12], replid[:12])


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def replication_info(conn: Connection) -> dict[str, str]:
    """`INFO replication` on a raw connection, as a dict of strings."""
    conn.send_command("INFO", "replication")
    fields = {}
    for line in _text(conn.read_response()).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def checked_connect(primary: Primary) -> Callable[[Connection], None]:
    """A redis-py `redis_connect_func`: the usual handshake, then the primary check above."""

    def connect(conn: Connection) -> None:
        conn.on_connect()
        info = replication_info(conn)
        if info.get("role") != "master":
            raise redis.ConnectionError(f"{conn.host}:{conn.port} is not a primary (role {info.get('role')})")
        conn.replid = info["master_replid"]  # type: ignore[attr-defined]  # the dataset this connection reached
        primary.observe(conn.replid)  # type: ignore[attr-defined]

    return connect


def sentinel_addresses(value: str) -> list[tuple[str, int]]:
    """REDIS_SENTINELS: `host:port,host:port,...`."""
    addresses = []
    for part in value.split(","):
        host, _, port = part.strip().rpartition(":")
        if host and port:
            addresses.append((host, int(port)))
    return addresses


class RedisTarget:
    """Where the app's Redis is: one URL, or a Sentinel-monitored primary. Pools made here check
    every new connection (see the module docstring) against one Primary."""

    def __init__(
        self,
        url: str | None,
        sentinels: Sequence[tuple[str, int]] = (),
        master: str = "",
        sentinel_timeout: float = 0.2,
    ) -> None:
        self.url = url
        self.master = master
        self.primary = Primary()
        self._pools: list[ConnectionPool] = []
        self._watcher_pid = 0
        self.sentinel = (
            Sentinel(
                list(sentinels),
                sentinel_kwargs={"socket_timeout": sentinel_timeout, "socket_connect_timeout": sentinel_timeout},
            )
            if sentinels
            else None
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RedisTarget | None:
        """None when neither REDIS_URL nor REDIS_SENTINELS is set (the in-process store)."""
        sentinels = sentinel_addresses(config.get("REDIS_SENTINELS") or "")
        url = config.get("REDIS_URL")
        if not (url or sentinels):
            return None
        return cls(url, sentinels, config.get("REDIS_SENTINEL_MASTER") or "", config["REDIS_SENTINEL_TIMEOUT"])

    def pool(self, *, max_connections: int, pool_wait: float, timeout: float, **kwargs: Any) -> ConnectionPool:
        """A blocking pool of checked connections, `timeout` s per socket operation, no retries
        (a failed call is a miss; the caller's breaker decides when to try again)."""
        options: dict[str, Any] = {
            "max_connections": max_connections,
            "timeout": pool_wait,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            "redis_connect_func": checked_connect(self.primary),
            **kwargs,
        }
        if self.sentinel is not None:
            options["is_master"] = True
            pool = SentinelBlockingConnectionPool(self.master, self.sentinel, **options)
            self._pools.append(pool)
            return pool
        assert self.url is not None
        return BlockingConnectionPool.from_url(self.url, **options)

    def connection_factory(self, timeout: float, **kwargs: Any) -> Callable[[], Connection]:
        """New checked connections, one at a time, each made to the current primary (the near
        cache's tracking connection: RESP3, kept for as long as it works)."""
        pool = self.pool(max_connections=1, pool_wait=timeout, timeout=timeout, **kwargs)

        def connect() -> Connection:
            # The pool's class and options (Sentinel discovery, the check), outside its accounting.
            conn: Connection = pool.connection_class(**pool.connection_kwargs)
            conn.connect()
            return conn

        return connect

    def watch(self, interval: float, on_moved: Callable[[], None]) -> None:
        """With Sentinels: a thread (a greenlet under gevent) of this process asks them every
        `interval` s which primary they name; when it moves, every pool of this target is
        disconnected and `on_moved()` runs. Once per process; nothing without Sentinels."""
        sentinel = self.sentinel
        if sentinel is None or self._watcher_pid == os.getpid():
            return
        self._watcher_pid = os.getpid()

        def run() -> None:
            named: tuple[str, int] | None = None
            while True:
                time.sleep(interval)
                try:
                    address = sentinel.discover_master(self.master)
                except (redis.RedisError, OSError):
                    continue  # no Sentinel names one now: the connections find out for themselves
                if named is not None and address != named:
                    log.warning("sentinels name a new redis primary %s:%s: reconnecting", *address)
                    for pool in self._pools:
                        pool.disconnect()
                    on_moved()
                named = address

        threading.Thread(target=run, name="sentinel-watch", daemon=True).start()
