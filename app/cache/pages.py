"""The page cache: rendered pages stored as bytes under generation-versioned keys.

`serve()` answers with an entry and says how it got it:

- near_hit: a fresh copy in this process (app/cache/near.py), no round trip;
- hit: a fresh entry from the store (one round trip: the lookup script);
- stale / refresh: an entry past its TTL, served at once; one request cluster-wide (`refresh`)
  takes a short lock and re-renders the page in the background, the others (`stale`) do not
  wait for it. With the database down the refresh fails and the stale bytes keep being served
  until they expire (CACHE_STALE_TTL);
- miss: no entry. The lookup script took the fill lock (or another process holds it and this
  one waits for its entry). Identical misses collapse: one computation per key per process
  (greenlets join the one in flight) and, through the lock, one per key cluster-wide. A miss
  costs two round trips: the lookup and the fill pipeline;
- degraded_hit / bypass: the store is unreachable. The page's generations are read from the
  database instead (one primary-key query, app/cache/generations.py: bumped inside every write's
  transaction, so exact at commit) and name a degraded key: a fresh near copy under it is served
  (degraded_hit), else the page is computed from the database at once, one computation per key per
  process, and kept in this process only (bypass). Without near entries, or when those
  generations cannot be read, pages are computed every time and not kept.

Which database computes a page is not the cache's business: a miss hands its computation, with
the commit LSN of the last write of each of the page's namespaces (read atomically with the
lookup), to the fill router when there is one (app/replicas.py: a replica only if it has
replayed them). A new Redis primary (app/cache/discovery.py) changes every key, drops the near
entries, raises the router's LSN floor and drains the outbox before the next read.

Each entry carries the time its page's content last changed: a re-render with an unchanged
validator (the same bytes) keeps it, whether it refreshes the same key or fills a new key after
a generation bump (the address record, app/cache/keys.py, remembers it).
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from flask import Flask, current_app

from app.cache.entries import Entry, Rendered, decode_record, encode_record
from app.cache.generations import DatabaseGenerations
from app.cache.invalidation import Invalidator
from app.cache.keys import (
    EPOCH_KEY,
    address,
    address_key,
    degraded_key,
    generation_key,
    lock_key,
    lsn_key,
    page_key,
)
from app.cache.near import NearEntries
from app.cache.store import LocalStore, Store, make_store
from app.deadline import app_scope, check, within

log = logging.getLogger(__name__)
T = TypeVar("T")
Compute = Callable[[], Rendered]
Background = Callable[[Callable[[], None]], None]


class FillRouter(Protocol):
    """Chooses the database a page is computed on (app/replicas.py)."""

    def fill(self, required: int | None, compute: Compute, pinned: bool = False) -> Rendered: ...
    def raise_floor(self) -> None: ...


def required_lsn(lsns: Sequence[bytes | None] | None) -> int | None:
    """The highest commit LSN among a page's namespaces (0: never written), None if unknown."""
    if lsns is None:
        return None
    return max((int(v) for v in lsns if v), default=0)


@dataclass(frozen=True, slots=True)
class Served:
    entry: Entry
    outcome: str  # near_hit | hit | stale | refresh | miss | degraded_hit | bypass
    age: float | None = None  # set when the entry is served past its fresh lifetime


class _Flight(Generic[T]):
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class Flights:
    """Single flight within the process: the first caller for a key runs the function, callers
    that arrive meanwhile wait for its result (or its exception) instead of running it again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, _Flight[Any]] = {}

    def run(self, key: str, fn: Callable[[], T], wait: float) -> T:
        with self._lock:
            flight = self._active.get(key)
            leader = flight is None
            if flight is None:
                flight = self._active[key] = _Flight()
        if not leader:
            if not flight.done.wait(wait):  # the leader is stuck: answer without it
                return fn()
            if flight.error is not None:
                raise flight.error
            return flight.result  # type: ignore[return-value]
        try:
            flight.result = fn()
            return flight.result
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._active[key]
            flight.done.set()


class Pages:
    """The mechanism for one app (see the module docstring); PageCache binds it to Flask."""

    def __init__(
        self,
        store: Store,
        config: dict[str, Any],
        invalidator: Invalidator,
        background: Background,
        router: FillRouter | None = None,
        database: DatabaseGenerations | None = None,
    ) -> None:
        self.store = store
        self.invalidator = invalidator
        self.background = background
        self.router = router
        # Near entries only in front of a remote store (the local one is in-process already).
        near_bytes = int(config["CACHE_NEAR_BYTES"])
        self.near = NearEntries(near_bytes) if near_bytes > 0 and not isinstance(store, LocalStore) else None
        # With the store unreachable, near copies are checked against the database's generations.
        self.database = database if self.near is not None else None
        self.ttls = {
            "feed": float(config["CACHE_TTL_FEED"]),
            "post": float(config["CACHE_TTL_POST"]),
            "directory": float(config["CACHE_TTL_DIRECTORY"]),
            "popular": float(config["CACHE_TTL_POPULAR"]),
        }
        self.negative_ttl = float(config["CACHE_NEGATIVE_TTL"])
        self.stale_ttl = float(config["CACHE_STALE_TTL"])
        self.jitter = float(config["CACHE_JITTER"])
        self.lock_ttl = float(config["CACHE_LOCK_TTL"])
        self.wait = float(config["CACHE_MISS_WAIT"])  # total, across lock holders
        self.flights = Flights()
        self._refreshing = 0
        self._refreshing_lock = threading.Condition()
        if store.primary is not None:
            store.primary.on_change(self._new_primary)

    def _new_primary(self) -> None:
        """Another Redis dataset (a failover, a restart): nothing learnt from the old one holds."""
        if self.near is not None:
            self.near.clear()
        if self.router is not None:
            self.router.raise_floor()
        self.invalidator.mark_pending()  # writes whose INCRs did not reach it: apply them first

    # --- versions -------------------------------------------------------------------------
    def versions(self, namespaces: Sequence[str]) -> tuple[bytes, list[bytes | None]] | None:
        """(epoch, generations) in one round trip at most, or None when the store is unreachable.

        Invalidations the store could not take (the outbox) are applied first, so nothing written
        while it was away is served stale once it is back.
        """
        if self.invalidator.pending and self.store.available():  # else drained once it answers again, below
            self.invalidator.drain_quietly()
        keys = [EPOCH_KEY, *map(generation_key, namespaces)]
        primary = self.store.primary
        for _ in range(3):
            switches = primary.switches if primary is not None else 0
            values = self.store.versions(keys)
            if values is not None and self.invalidator.pending:  # the store recovered (or changed) meanwhile
                self.invalidator.drain_quietly()
                values = self.store.versions(keys)
            if primary is None or values is None or primary.switches == switches:
                break
            # A connection met a new primary while these were read: read them again from it.
        else:
            return None
        if values is None:
            return None
        epoch, generations = values[0], values[1:]
        if epoch is None:  # empty store (first start, or Redis lost its data): new epoch
            candidate = secrets.token_hex(4).encode()
            if not self.store.add(EPOCH_KEY, candidate, ttl=10 * 365 * 86400):
                return self.versions(namespaces)
            epoch = candidate
        if primary is not None:
            epoch += primary.tag  # pages of another primary's dataset are never read (discovery.py)
        return epoch, generations

    # --- serving ----------------------------------------------------------------------------
    def near_entry(self, page: str, namespaces: Sequence[str], now: float) -> Entry | None:
        """The fresh near copy serve() would answer as a `near_hit` for this page address, found
        the same way (epoch and generations, then the versioned key), or None: whatever serve()
        would do instead (drain the outbox, bypass, go to Redis, serve stale) is serve()'s."""
        near = self.near
        if near is None or self.invalidator.pending:
            return None
        versions = self.versions(namespaces)
        if versions is None:
            return None
        entry: Entry | None = near.get(page_key(page, *versions))
        if entry is None or entry.fresh_until <= now:
            return None
        return entry

    def serve(
        self,
        endpoint: str,
        namespaces: Sequence[str],
        params: dict[str, Any],
        family: str,
        compute: Compute,
        on_primary: bool = False,
    ) -> Served:
        """`on_primary`: the page must be computed on the primary database (it writes, or reads
        what it just wrote)."""
        page = address(endpoint, params)
        ttl = self.ttls[family]
        now = time.time()
        versions = self.versions(namespaces)
        if versions is None:
            return self._degraded(page, namespaces, ttl, self._routed(None, compute, on_primary), now)
        epoch, generations = versions
        key = page_key(page, epoch, generations)
        near = self.near
        if near is not None:
            entry: Entry | None = near.get(key)
            if entry is not None and entry.fresh_until > now:
                return Served(entry, "near_hit")
        lsn_keys = [lsn_key(n) for n in namespaces] if self.router is not None and not on_primary else ()
        record_key = address_key(page, epoch)
        served = self.flights.run(
            key, lambda: self._lookup(key, record_key, ttl, compute, lsn_keys, on_primary), within(self.wait)
        )
        entry = served.entry
        if served.outcome != "hit" or entry.fresh_until > now:
            return served
        return self._stale(key, record_key, entry, ttl, compute, now, lsn_keys, on_primary)

    def _routed(self, lsns: Sequence[bytes | None] | None, compute: Compute, on_primary: bool) -> Compute:
        """`compute` as the fill router will run it (unchanged without one)."""
        router = self.router
        if router is None:
            return compute
        required = required_lsn(lsns)
        return lambda: router.fill(required, compute, on_primary)

    def _lookup(
        self,
        key: str,
        record_key: str,
        ttl: float,
        compute: Compute,
        lsn_keys: Sequence[str] = (),
        on_primary: bool = False,
    ) -> Served:
        """This process's one look at the store for `key` (other greenlets wait on it). Waiting for
        other processes' fills ends with the request's database deadline: past it, computing the
        page could only fail, so the request gets what a database timeout gets (stale or 503)."""
        give_up = time.monotonic() + within(self.wait)
        while True:
            found = self.store.lookup(key, lock_key(key), record_key, self.lock_ttl, lsn_keys)
            if found is None:
                return Served(self._entry(self._routed(None, compute, on_primary)(), ttl, None), "bypass")
            if found.value is not None:
                entry = Entry.decode(found.value)
                if entry is not None:
                    if self.near is not None:
                        self.near.put(key, entry, len(found.value))
                    return Served(entry, "hit")
                found = found._replace(locked=self.store.add(lock_key(key), b"1", self.lock_ttl))  # older layout
            routed = self._routed(found.lsns, compute, on_primary)
            if found.locked:
                return Served(self._fill(key, record_key, ttl, routed, decode_record(found.record)), "miss")
            waited = self._await_fill(key, give_up)
            if waited is not None:
                return Served(waited, "miss")
            if time.monotonic() > give_up or self.store.peek(key, lock_key(key)) is None:
                check()
                return Served(self._entry(routed(), ttl, None), "miss")  # no coordination possible: answer

    def _await_fill(self, key: str, give_up: float) -> Entry | None:
        """Another process holds the fill lock: poll for its entry while the lock lives."""
        delay = 0.005
        while time.monotonic() < give_up:
            time.sleep(delay)
            state = self.store.peek(key, lock_key(key))
            if state is None:  # the store went away: stop waiting on it
                return None
            value, locked = state
            if value is not None:
                return Entry.decode(value)
            if not locked:
                return None  # released without an entry (holder failed): look again
            delay = min(delay * 2, 0.05)
        return None

    def _fill(
        self, key: str, record_key: str, ttl: float, compute: Compute, previous: tuple[str, float] | None
    ) -> Entry:
        """Compute the page and store it (this caller holds the fill lock)."""
        try:
            check()  # a waiter whose deadline passed while it waited takes the lock only to give it back
            entry = self._entry(compute(), ttl, previous)
        except BaseException:
            self.store.delete(lock_key(key))  # let the next reader try at once
            raise
        encoded = entry.encode()
        record = encode_record(entry.rendered.etag, entry.modified_at)
        self.store.fill(
            key, encoded, entry.fresh_until - entry.stored_at + self.stale_ttl, record_key, record, lock_key(key)
        )
        if self.near is not None:
            self.near.put(key, entry, len(encoded))
        return entry

    def _stale(
        self,
        key: str,
        record_key: str,
        entry: Entry,
        ttl: float,
        compute: Compute,
        now: float,
        lsn_keys: Sequence[str] = (),
        on_primary: bool = False,
    ) -> Served:
        age = now - entry.stored_at
        if not self.store.add(lock_key(key), b"1", self.lock_ttl):
            return Served(entry, "stale", age)
        previous = (entry.rendered.etag, entry.modified_at)

        def refresh() -> None:
            try:
                lsns = self.store.lsns(lsn_keys) if lsn_keys else None
                self._fill(key, record_key, ttl, self._routed(lsns, compute, on_primary), previous)
            except Exception as exc:  # the stale entry stays; the lock expires, then someone retries
                log.warning("refresh failed, serving stale: %s", type(exc).__name__)
            finally:
                with self._refreshing_lock:
                    self._refreshing -= 1
                    self._refreshing_lock.notify_all()

        with self._refreshing_lock:
            self._refreshing += 1
        self.background(refresh)
        return Served(entry, "refresh", age)

    def wait_for_refreshes(self, timeout: float = 10.0) -> bool:
        """Block until no background refresh is running (tests, shutdown)."""
        with self._refreshing_lock:
            return self._refreshing_lock.wait_for(lambda: self._refreshing == 0, timeout)

    def _degraded(self, page: str, namespaces: Sequence[str], ttl: float, compute: Compute, now: float) -> Served:
        """The store is unreachable: near copies under the database's generations (module docstring).
        The generations are read before the page is looked up or computed, never after."""
        near, database = self.near, self.database
        token = database.token(namespaces) if database is not None else None
        if near is None or token is None:
            return Served(self._bypass("bypass:" + page, ttl, compute), "bypass")
        key = degraded_key(page, token)
        entry: Entry | None = near.get(key)
        if entry is not None and entry.fresh_until > now:
            return Served(entry, "degraded_hit")
        return Served(self._bypass(key, ttl, compute, near), "bypass")

    def _bypass(self, key: str, ttl: float, compute: Compute, near: NearEntries | None = None) -> Entry:
        """Compute the page now, once per `key` in this process; kept in `near` when given."""

        def run() -> Entry:
            entry = self._entry(compute(), ttl, None)
            if near is not None:
                rendered = entry.rendered
                near.put(key, entry, len(rendered.body) + len(rendered.link) + 128)
            return entry

        return self.flights.run(key, run, within(self.wait))

    def _entry(self, rendered: Rendered, ttl: float, previous: tuple[str, float] | None) -> Entry:
        now = time.time()
        lifetime = (self.negative_ttl if rendered.negative else ttl) * (1 + random.uniform(-self.jitter, self.jitter))
        modified = previous[1] if previous is not None and previous[0] == rendered.etag else now
        return Entry(rendered, now, now + lifetime, modified)


def _spawn_in(app: Flask) -> Background:
    """Run a function in its own thread (a greenlet under gevent) inside an app context, its
    database waits bounded by the app's deadline (app/deadline.py): a refresh against a hung
    database gives up and leaves the stale entry, and its connection, invalidated, is not reused."""

    def spawn(fn: Callable[[], None]) -> None:
        def run() -> None:
            with app.app_context(), app_scope(app):  # bounded by the database deadline, like a request
                fn()

        threading.Thread(target=run, name="page-refresh", daemon=True).start()

    return spawn


class PageCache:
    """Flask extension: the current app's page cache (`page_cache.serve(...)`)."""

    key = "page_cache"

    def init_app(self, app: Flask, invalidator: Invalidator, router: FillRouter | None = None) -> None:
        """The store is shared with the invalidator: it bumps generations where pages are kept."""
        store = make_store(app.config, on_recover=invalidator.mark_pending)
        invalidator.store = store
        database = DatabaseGenerations(invalidator.engine) if invalidator.with_lsn else None  # PostgreSQL
        app.extensions[self.key] = Pages(store, app.config, invalidator, _spawn_in(app), router, database)

    def pages(self, app: Flask | None = None) -> Pages:
        pages: Pages = (app or current_app).extensions[self.key]
        return pages

    @property
    def store(self) -> Store:
        return self.pages().store

    def serve(
        self,
        endpoint: str,
        namespaces: Sequence[str],
        params: dict[str, Any],
        family: str,
        compute: Compute,
        on_primary: bool = False,
    ) -> Served:
        return self.pages().serve(endpoint, namespaces, params, family, compute, on_primary)
