"""The near cache: the per-process layer in front of Redis. Exact copies of the version
counters, and the hottest page entries, so a cache hit usually needs no round trip at all.

Counters (epoch and generations) are mirrored with Redis client tracking: one RESP3
connection per process asks Redis (CLIENT TRACKING ON BCAST) to push an invalidation for any
key under the counter prefixes whenever one changes. Every read first applies the pushes
that have already arrived (a non-blocking poll, about 1 µs), then answers from its copies.
Redis writes the push in the same event-loop turn as the writer's INCR reply, sometimes just
after it; so the writer follows its INCRs with a PING (RedisStore.incr; the push doorbell's
PUBLISH instead, when the write has events), which Redis serves in a later turn: when its reply
is back, the push is on every process's socket, before the write is acknowledged, before any
subscriber hears the doorbell and before any later request can look.

The tracking connection is made like every other (app/cache/discovery.py: through Sentinel
when configured, checked to be the primary); a new connection starts with no copies, and a
connection still open to another dataset than the one the process last met (a failover seen
first by another connection) is dropped before it answers anything.

A hung Redis sends nothing, so copies are trusted only for `trust` seconds after a round
trip that began while Redis was answering; past that the requested keys are fetched again.
A write whose INCR fails waits out that window before it is acknowledged
(app/cache/invalidation.py), so no process can still trust a pre-write copy by then.

Page entries are immutable under their versioned key, so a near copy can be served for as
long as it is fresh; a stale one goes back to Redis (where another worker may have refreshed
it). The copies are bounded by bytes, least recently used out first.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from redis.connection import Connection

from app.compat import redis_on_invalidation, redis_push_pending

if TYPE_CHECKING:
    from app.cache.discovery import Primary

_MAX_COUNTERS = 100_000  # distinct counters kept; past this the copies start over


class NearCounters:
    """Tracked local copies of Redis keys under `prefixes` (see the module docstring)."""

    def __init__(
        self,
        connect: Callable[[], Connection],
        prefixes: Sequence[str],
        trust: float,
        primary: Primary | None = None,
    ) -> None:
        self._connect = connect  # a new connection to the current primary, checked (app/cache/discovery.py)
        self._primary = primary
        self._prefixes = list(prefixes)
        self.trust = trust
        self._conn: Connection | None = None
        self._pid = 0
        self._values: dict[str, bytes | None] = {}
        self._trusted_until = 0.0
        self._lock = threading.Lock()

    def _on_push(self, message: list[Any]) -> None:
        keys = message[1]
        if keys is None:  # FLUSHDB/FLUSHALL
            self._values.clear()
            return
        for key in keys:
            self._values.pop(key.decode() if isinstance(key, bytes) else key, None)

    def _connection(self) -> Connection:
        conn = self._conn
        primary = self._primary
        if (
            conn is not None
            and self._pid == os.getpid()
            and (primary is None or getattr(conn, "replid", None) == primary.replid)
        ):
            return conn
        if conn is not None and self._pid == os.getpid():  # another connection met a new primary
            conn.disconnect()
        self._conn = None
        self._values.clear()  # a new connection knows nothing of what changed before it
        self._trusted_until = 0.0
        conn = self._connect()
        redis_on_invalidation(conn, self._on_push)
        prefixes = [arg for prefix in self._prefixes for arg in ("PREFIX", prefix)]
        conn.send_command("CLIENT", "TRACKING", "ON", "BCAST", *prefixes)
        conn.read_response()
        self._conn, self._pid = conn, os.getpid()
        return conn

    def reset(self) -> None:
        """Forget everything (after any error); the next call reconnects."""
        with self._lock:
            conn, self._conn = self._conn, None
            self._values.clear()
            self._trusted_until = 0.0
        if conn is not None and self._pid == os.getpid():
            conn.disconnect()

    def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        """Current values of `keys`; raises redis/OS errors (the caller resets and falls back)."""
        with self._lock:
            conn = self._connection()
            while redis_push_pending(conn) and conn.can_read(timeout=0):  # apply the invalidations already received
                conn.read_response(push_request=True, timeout=0, disconnect_on_error=False)
            values = self._values
            now = time.monotonic()
            missing = list(keys) if now >= self._trusted_until else [k for k in keys if k not in values]
            if missing:
                conn.send_command("MGET", *missing)
                fetched = conn.read_response()  # pushes that arrive first are applied on the way
                if len(values) > _MAX_COUNTERS:
                    values.clear()
                values.update(zip(missing, fetched, strict=True))
                if now >= self._trusted_until:
                    self._trusted_until = now + self.trust
            return [values[k] for k in keys]


class NearEntries:
    """A byte-bounded LRU of decoded page entries, keyed by versioned page key."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            self._entries.move_to_end(key)
            return hit[0]

    def put(self, key: str, entry: Any, size: int) -> None:
        if size > self.max_bytes // 8:  # one huge page must not wipe out the hot set
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (entry, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
