"""Read replicas for page fills: which database computes a page the cache is about to store.

The trap (issue 15): a write bumps its generations after COMMIT; a reader that then misses
under the new generation and computes the page on a lagging replica stores the pre-write page
under the post-write key, stale until its TTL. So:

- every write records its commit LSN next to the generations it bumps (app/cache/invalidation.py
  reads it after its COMMIT; app/cache/store.py raises `rw:lsn:<namespace>` in the same atomic
  step as the INCRs);
- a miss reads the LSNs of its page's namespaces atomically with its lookup, and `fill()` here
  computes the page on a replica only if that replica has replayed at least the highest of them
  (`pg_last_wal_replay_lsn()`; READ COMMITTED statements that start after that check see every
  commit up to it), else on the primary (optionally after a bounded wait, DB_REPLICA_WAIT);
- after a Redis failover the LSN keys may have lost their last updates like the generations, so
  the page cache raises a floor (`raise_floor`): the primary's WAL position when the new Redis
  primary was first seen, below which no fill may read.

The same rule gives a writer read-your-writes on every node: every page of its namespaces misses
(new generation) and is filled from data at or past its LSN. Pages that are written while they
are computed (/popular's snapshot) and anything inside a write stay on the primary.

Routing is a context variable read by the session's `get_bind` (RoutingSession): code that
reads through `db.session` needs no change. Code that takes a connection from an engine
directly should take it from `read_engine()` to be routed as well.

Page fills read only, so they read without a transaction (`read_only()`, issue 11): through a
transaction, psycopg sent BEGIN before the first statement and the session's close a ROLLBACK,
two round trips (and two commands for the server) on every cache miss. In the block, the
session's statements go to an AUTOCOMMIT view of the same engine (same pool; psycopg's
autocommit is a client-side flag, set at checkout and reset at return, no round trip), the
primary's or the replica's the fill was routed to. Each statement is then a snapshot of its
own, as any READ COMMITTED statement is; the LSN rule above holds per statement. A session
that has written in this transaction keeps its transaction (RoutingSession._writing).

Each process watches its replicas (a thread, a greenlet under gevent, every
DB_REPLICA_CHECK_INTERVAL s): one that does not answer, was promoted (no longer in recovery),
lags more than DB_REPLICA_MAX_LAG_BYTES, or has received WAL it has not replayed for
DB_REPLICA_MAX_STALL s (replay paused or stuck) is left out until it is back under half those
bounds. Lag never makes a read stale (the LSN rule does that); it only saves wasted checks.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Flask, current_app
from flask_sqlalchemy.session import Session as FlaskSession
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.observability.metrics import PAGE_FILLS, REPLICA_LAG_BYTES, REPLICA_UP

log = logging.getLogger(__name__)
T = TypeVar("T")

_FILL_ENGINE: ContextVar[Engine | None] = ContextVar("readwire_fill_engine", default=None)
_READ_ONLY: ContextVar[bool] = ContextVar("readwire_read_only", default=False)
_AUTOCOMMIT = "readwire_autocommit"  # engine attribute: its AUTOCOMMIT view, made once
_WROTE = "replicas.wrote"  # session.info: this transaction has flushed changes

# One statement each, no transaction of their own beyond the driver's.
_REPLICA_STATE = text(
    "SELECT pg_is_in_recovery(),"
    " coalesce(pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0'), 0)::bigint,"
    " coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0'), 0)::bigint"
)
_PRIMARY_LSN = text("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint")


def read_engine() -> Engine | None:
    """The replica this page fill reads from, or None (the primary)."""
    return _FILL_ENGINE.get()


def sessionless_read(session: Any, primary: Engine | Connection) -> Engine | None:
    """The autocommit engine a statement of a read-only block may run on without the session
    (`session`: the request's, or None if it has none yet): its own checkout and return, routed
    as the session would route it. The session's connection costs a SessionTransaction, its
    state machine and the session's close around the same checkout: 192 against 72 us of CPU
    per page read (issue 11). None when the statement must go through the session: outside a
    read-only block, a session that has begun a transaction or holds changes (its own writes
    are visible only on its connection), or a bind that is a Connection (the test harness's
    outer transaction)."""
    if not _READ_ONLY.get():
        return None
    if session is not None and (session.in_transaction() or session._writing()):
        return None
    engine = _FILL_ENGINE.get() or primary
    return autocommit(engine) if isinstance(engine, Engine) else None


def autocommit(engine: Engine) -> Engine:
    """`engine` with its connections in autocommit mode (the same pool), made once per engine."""
    found: Engine | None = engine.__dict__.get(_AUTOCOMMIT)
    if found is None:
        found = engine.execution_options(isolation_level="AUTOCOMMIT")
        engine.__dict__[_AUTOCOMMIT] = found
    return found


@contextmanager
def read_only(enabled: bool = True) -> Iterator[None]:
    """The session's statements in this block only read: no transaction around them (see the
    module docstring). `enabled` False: a no-op (the caller may write)."""
    if not enabled:
        yield
        return
    token = _READ_ONLY.set(True)
    try:
        yield
    finally:
        _READ_ONLY.reset(token)


class RoutingSession(FlaskSession):
    """Flask-SQLAlchemy's session, bound to the fill's replica while a page is computed on one
    (and never once this transaction has written anything)."""

    def get_bind(
        self,
        mapper: Any | None = None,
        clause: Any | None = None,
        bind: Engine | Connection | None = None,
        **kwargs: Any,
    ) -> Engine | Connection:
        if bind is None and not self._writing():
            engine = _FILL_ENGINE.get()
            reading = _READ_ONLY.get()
            if engine is not None:
                return autocommit(engine) if reading else engine
            if reading:
                primary = super().get_bind(mapper, clause=clause, bind=bind, **kwargs)
                # A Connection (the test harness's outer transaction) is used as it is.
                return autocommit(primary) if isinstance(primary, Engine) else primary
        return super().get_bind(mapper, clause=clause, bind=bind, **kwargs)

    def _writing(self) -> bool:
        return bool(self._flushing or self.new or self.deleted or self.dirty or self.info.get(_WROTE))


def _wrote(session: RoutingSession, flush_context: Any) -> None:
    session.info[_WROTE] = True


def _ended(session: RoutingSession, *args: Any) -> None:
    session.info.pop(_WROTE, None)


event.listen(RoutingSession, "after_flush", _wrote)
event.listen(RoutingSession, "after_commit", _ended)
event.listen(RoutingSession, "after_rollback", _ended)


@dataclass(eq=False)
class Replica:
    name: str
    engine: Engine
    up: bool = True  # in rotation (the first health round or a fill's own check decides)
    reason: str = ""
    replayed: int = 0  # the highest replay position seen (bytes since 0/0), by any check
    checked: int = -1  # the replay position the last health round saw
    advanced_at: float = field(default_factory=time.monotonic)  # when replay last moved

    def state(self) -> tuple[bool, int, int]:
        """(in recovery, replayed, received), read on the replica now."""
        with self.engine.connect() as conn:
            row = conn.execute(_REPLICA_STATE).one()
        return bool(row[0]), int(row[1]), int(row[2])

    def set_up(self, up: bool, reason: str) -> None:
        if up != self.up:
            log.warning("read replica %s %s%s", self.name, "back in rotation" if up else "left out: ", reason)
        self.up, self.reason = up, reason
        REPLICA_UP.labels(self.name).set(1 if up else 0)


class ReadRouter:
    """One app's replicas and the rule above (see the module docstring)."""

    def __init__(
        self,
        app: Flask,
        primary: Engine,
        replicas: Sequence[Replica],
        *,
        max_lag: int,
        max_stall: float,
        interval: float,
        wait: float,
        rollback: Callable[[], None],
    ) -> None:
        self.app = app
        self.primary_engine = primary
        self.replicas = list(replicas)
        self.max_lag = max_lag
        self.max_stall = max_stall
        self.interval = interval
        self.wait = wait
        self.rollback = rollback
        self.floor = 0
        self.floor_pending = True  # until a Redis primary has been met and the floor read
        self._turn = itertools.count()
        self._watcher_pid = 0
        self._lock = threading.Lock()

    # --- the fill rule ------------------------------------------------------------------------
    def raise_floor(self) -> None:
        """The cache's LSN keys may have lost updates (a new Redis primary): before the next fill,
        read the primary's WAL position and let no fill read below it."""
        self.floor_pending = True

    def _read_floor(self) -> None:
        with self.primary_engine.connect() as conn:
            position = int(conn.execute(_PRIMARY_LSN).scalar_one())
        self.floor_pending = False
        self.floor = max(self.floor, position)

    def fill(self, required: int | None, compute: Callable[[], T], pinned: bool = False) -> T:
        """Compute a page on a replica that has replayed `required` (and the floor), else on the
        primary. `required` None: unknown (the cache is away), `pinned`: the page must be read on
        the primary; both read the primary."""
        self._ensure_watcher()
        if pinned or required is None:
            PAGE_FILLS.labels("primary", "pinned" if pinned else "unknown_lsn").inc()
            return compute()
        if self.floor_pending:
            self._read_floor()
        required = max(required, self.floor)
        replica, reason = self._choose(required)
        if replica is None:
            PAGE_FILLS.labels("primary", reason).inc()
            return compute()
        token = _FILL_ENGINE.set(replica.engine)
        try:
            result = compute()
        except (DBAPIError, PoolTimeout) as exc:
            failure = exc
        else:
            PAGE_FILLS.labels("replica", "replayed").inc()
            return result
        finally:
            _FILL_ENGINE.reset(token)
        # The replica failed this fill (gone, restarting, a query cancelled by replay): the primary.
        log.warning("page fill failed on %s (%s): reading the primary", replica.name, type(failure).__name__)
        if isinstance(failure, PoolTimeout) or failure.connection_invalidated:
            replica.set_up(False, "unreachable")
        self.rollback()
        PAGE_FILLS.labels("primary", "replica_failed").inc()
        return compute()

    def _choose(self, required: int) -> tuple[Replica | None, str]:
        candidates = [r for r in self.replicas if r.up]
        if not candidates:
            return None, "no_replica"
        start = next(self._turn) % len(candidates)
        ordered = candidates[start:] + candidates[:start]
        for replica in ordered:  # one already known to be far enough: no statement at all
            if replica.replayed >= required:
                return replica, ""
        deadline = time.monotonic() + self.wait
        while True:
            for replica in ordered:
                if self._caught_up(replica, required):
                    return replica, ""
            if time.monotonic() >= deadline or not any(r.up for r in ordered):
                return None, "behind"
            time.sleep(0.002)

    def _caught_up(self, replica: Replica, required: int) -> bool:
        """Ask the replica where it is (one statement)."""
        if not replica.up:
            return False
        try:
            in_recovery, replayed, _ = replica.state()
        except (DBAPIError, PoolTimeout) as exc:
            replica.set_up(False, f"unreachable ({type(exc).__name__})")
            return False
        if not in_recovery:
            replica.set_up(False, "promoted")
            return False
        replica.replayed = max(replica.replayed, replayed)
        return replayed >= required

    # --- health -------------------------------------------------------------------------------
    def check(self) -> None:
        """One health round: each replica's state against the primary's position."""
        with self.primary_engine.connect() as conn:
            primary = int(conn.execute(_PRIMARY_LSN).scalar_one())
        now = time.monotonic()
        for replica in self.replicas:
            try:
                in_recovery, replayed, received = replica.state()
            except (DBAPIError, PoolTimeout) as exc:
                replica.replayed = replica.checked = 0  # it may come back rebuilt: learn again
                replica.set_up(False, f"unreachable ({type(exc).__name__})")
                continue
            if replayed > replica.checked or received <= replayed:
                replica.advanced_at = now  # replaying, or nothing received is left to replay
            replica.checked = replayed
            replica.replayed = max(replica.replayed, replayed)
            lag = max(0, primary - replayed)
            stalled = now - replica.advanced_at
            REPLICA_LAG_BYTES.labels(replica.name).set(lag)
            if not in_recovery:
                replica.set_up(False, "promoted")
            elif lag > self.max_lag:
                replica.set_up(False, f"lag {lag} bytes")
            elif stalled > self.max_stall:
                replica.set_up(False, f"replay stalled {stalled:.1f} s")
            elif not replica.up and lag <= self.max_lag // 2 and stalled <= self.max_stall / 2:
                replica.set_up(True, "")
            REPLICA_UP.labels(replica.name).set(1 if replica.up else 0)

    def _ensure_watcher(self) -> None:
        if self._watcher_pid == os.getpid():
            return
        with self._lock:
            if self._watcher_pid == os.getpid():
                return
            self._watcher_pid = os.getpid()
            threading.Thread(target=self._watch, name="replica-watch", daemon=True).start()

    def _watch(self) -> None:
        """The health rounds, forever (never raises)."""
        while True:
            try:
                with self.app.app_context():
                    self.check()
            except Exception as exc:  # the primary is away: the next round retries
                log.warning("replica health check failed: %s", type(exc).__name__)
            time.sleep(self.interval)


class ReadReplicas:
    """Flask extension: the current app's ReadRouter, or None without DATABASE_REPLICA_URLS."""

    key = "replicas"

    def init_app(self, app: Flask, db: Any) -> None:
        urls: list[str] = app.config["DATABASE_REPLICA_URLS"]
        if not urls:
            app.extensions[self.key] = None
            return
        options = dict(app.config["SQLALCHEMY_ENGINE_OPTIONS"])  # the primary's pool and timeouts
        replicas = [Replica(f"replica-{i}", create_engine(url, **options)) for i, url in enumerate(urls, 1)]
        with app.app_context():
            primary = db.engine
        app.extensions[self.key] = ReadRouter(
            app,
            primary,
            replicas,
            max_lag=int(app.config["DB_REPLICA_MAX_LAG_BYTES"]),
            max_stall=float(app.config["DB_REPLICA_MAX_STALL"]),
            interval=float(app.config["DB_REPLICA_CHECK_INTERVAL"]),
            wait=float(app.config["DB_REPLICA_WAIT"]),
            rollback=lambda: db.session.rollback(),
        )

    def router(self, app: Flask | None = None) -> ReadRouter | None:
        router: ReadRouter | None = (app or current_app).extensions[self.key]
        return router
