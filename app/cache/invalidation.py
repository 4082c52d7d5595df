"""Commit-gated invalidation.

While a session flushes, the namespaces its changes touch are resolved (ids -> slugs, in the
same transaction) and written to cache_outbox in that transaction. After the commit they are
bumped (one INCR each, in one atomic step) and the outbox rows deleted. A rollback bumps
nothing. The same namespaces are also bumped in the database, inside the transaction, just before
it commits (app/cache/generations.py): what readers check their near copies against while Redis
is unreachable. If the store cannot take the INCRs, the write keeps trying for CACHE_INVALIDATION_WAIT
(a Redis failover), then the rows stay and are drained before this process reads from the cache
again, whenever the circuit breaker sees the store come back, and by each worker's drain loop
(rows left by a process killed between its commit and its INCRs).

On PostgreSQL each bump also carries the write's commit LSN (for replica reads, app/replicas.py):
the statement that deletes the outbox rows, after the write's COMMIT, also reads
`pg_current_wal_insert_lsn()`, at or past the end of the commit record; the delete commits only
once the store has taken the bump. No extra statement or round trip per write.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from itertools import chain
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app
from sqlalchemy import bindparam, delete, event, insert, inspect, literal_column, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from app.cache import generations
from app.cache.keys import generation_key, lsn_key
from app.deadline import at_least
from app.exceptions import OutcomeUnknown
from app.models import Author, CacheOutbox, Category, Comment, Post, PostTag, Tag

if TYPE_CHECKING:
    from app.cache.store import Store

log = logging.getLogger(__name__)
# After a write's COMMIT, its invalidation (one statement and the INCRs) gets this long past the
# request's database deadline (app/deadline.py): a write that committed in the last milliseconds
# of its budget is still acknowledged, and a request waits at most the deadline + this.
AFTER_COMMIT_S = 1.0
_NAMESPACES = "invalidation.namespaces"  # session.info keys
_OUTBOX_IDS = "invalidation.outbox_ids"
_DB_PENDING = "invalidation.db_pending"  # namespaces not yet bumped in cache_generations
_DB_COMMITTING = "invalidation.db_committing"  # bumped at before_commit: later flushes bump at once


def _old_and_new(obj: Any, attr: str) -> set[Any]:
    history = inspect(obj).attrs[attr].history
    return {v for v in chain(history.deleted or (), history.added or (), history.unchanged or ()) if v is not None}


def _touched(session: Session) -> tuple[set[int], set[int], set[int], set[int], set[int]]:
    """(posts, categories, authors, tags, commented posts) changed in this flush."""
    posts: set[int] = set()
    categories: set[int] = set()
    authors: set[int] = set()
    tags: set[int] = set()
    commented: set[int] = set()
    for obj in chain(session.new, session.dirty, session.deleted):
        if isinstance(obj, Post):
            posts.add(obj.id)
            categories |= _old_and_new(obj, "category_id")
            authors |= _old_and_new(obj, "author_id")
        elif isinstance(obj, PostTag):
            posts.add(obj.post_id)
            tags |= _old_and_new(obj, "tag_id")
        elif isinstance(obj, Comment):
            commented.add(obj.post_id)
    return posts, categories, authors, tags, commented


def _accounts(session: Session) -> set[str]:
    """Usernames (old and new) of authors created or changed in this flush (the CLI's accounts)."""
    names: set[str] = set()
    for obj in chain(session.new, session.dirty):
        if isinstance(obj, Author):
            names |= _old_and_new(obj, "username")
    return names


def namespaces_for(session: Session) -> set[str]:
    """Every cache namespace whose pages this flush makes out of date."""
    posts, categories, authors, tags, commented = _touched(session)
    # A new or changed account: the authors list and its own page (a cached 404 included).
    changed = _accounts(session)
    accounts = {"directory", *(f"author:{name}" for name in changed)} if changed else set()
    if not (posts or commented):
        return accounts
    conn = session.connection()
    if posts:  # every tag the posts carry now (tags removed in this flush are in `tags`)
        tags |= set(conn.execute(select(PostTag.tag_id).where(PostTag.post_id.in_(posts))).scalars())
        rows = conn.execute(select(Post.category_id, Post.author_id).where(Post.id.in_(posts))).all()
        categories |= {row[0] for row in rows}
        authors |= {row[1] for row in rows}
    names = {f"post:{p}" for p in posts} | {f"comments:{p}" for p in commented} | {f"post:{p}" for p in commented}
    if posts:
        names |= {"feed", "directory"}
    names |= {f"cat:{s}" for s in _slugs(conn, Category.slug, Category.id, categories)}
    names |= {f"tag:{s}" for s in _slugs(conn, Tag.slug, Tag.id, tags)}
    names |= {f"author:{s}" for s in _slugs(conn, Author.username, Author.id, authors)}
    return names | accounts


def _slugs(conn: Any, column: Any, id_column: Any, ids: Iterable[int]) -> list[str]:
    ids = list(ids)
    return list(conn.execute(select(column).where(id_column.in_(ids))).scalars()) if ids else []


def _after_flush(session: Session, flush_context: Any) -> None:
    names = namespaces_for(session)
    if not names:
        return
    outbox_id = (
        session.connection()
        .execute(insert(CacheOutbox).values(namespaces=" ".join(sorted(names))).returning(CacheOutbox.id))
        .scalar_one()
    )
    session.info.setdefault(_NAMESPACES, set()).update(names)
    session.info.setdefault(_OUTBOX_IDS, []).append(outbox_id)
    if session.info.get(_DB_COMMITTING):  # a flush after before_commit (another listener's rows)
        _bump_in_database(session, names)
    else:
        session.info.setdefault(_DB_PENDING, set()).update(names)


def _bump_in_database(session: Session, names: Iterable[str]) -> None:
    conn = session.connection()
    if conn.dialect.name == "postgresql":  # SQLite: the in-process store, never unreachable
        generations.bump(conn, list(names))


def _before_commit(session: Session) -> None:
    """The database generations of every namespace this transaction invalidates, bumped in it
    (app/cache/generations.py): after the last pending flush, once, sorted."""
    if session.new or session.dirty or session.deleted:
        session.flush()
    names = session.info.pop(_DB_PENDING, None)
    if names:
        _bump_in_database(session, names)
    session.info[_DB_COMMITTING] = True


def _after_rollback(session: Session) -> None:
    session.info.pop(_NAMESPACES, None)
    session.info.pop(_OUTBOX_IDS, None)
    session.info.pop(_DB_PENDING, None)
    session.info.pop(_DB_COMMITTING, None)


# The outbox rows of one write deleted, and the WAL insert position read, in one statement: run
# after the write's COMMIT, the position is at or past its commit record.
_DELETE_AND_LSN = text(
    "WITH gone AS (DELETE FROM cache_outbox WHERE id = ANY(:ids))"
    " SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint"
).bindparams(bindparam("ids"))
_INSERT_LSN: Any = literal_column("pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint")


class Invalidator:
    """Bumps generations in the page cache's store and keeps the outbox in step with what the
    store has taken (one per app; the page cache gives it its store)."""

    def __init__(self, engine: Any, retry_for: float = 0.0, retry_every: float = 0.1) -> None:
        # Outbox bookkeeping runs on its own connection, outside the request's session
        # (after_commit cannot emit SQL on the session that just committed).
        self.engine = engine
        self.store: Store | None = None
        self.pending = True  # a previous process may have left rows: drain before first read
        self.retry_for = retry_for
        self.retry_every = retry_every
        self.with_lsn = engine.dialect.name == "postgresql"

    def _bump(self, keys: list[str], names: list[str], lsn: int, force: bool) -> bool:
        assert self.store is not None, "the page cache binds its store at init_app"
        return self.store.incr(keys, [lsn_key(n) for n in names] if lsn else (), lsn, force=force)

    def apply(self, names: Iterable[str], outbox_ids: list[int]) -> None:
        """After a write's COMMIT: bump its generations and delete its outbox rows. If the database
        fails us now (hung past the deadline, gone), the write is committed but its invalidation
        is not done: the rows stay for the drain loops, and the write is not acknowledged
        (OutcomeUnknown: the client must not be told to repeat it as if nothing happened)."""
        try:
            with at_least(AFTER_COMMIT_S):  # the COMMIT succeeded: finishing it may take a little more
                self._apply(names, outbox_ids)
        except (DBAPIError, PoolTimeout) as exc:
            log.warning("write committed, invalidation left in the outbox: %s", type(exc).__name__)
            raise OutcomeUnknown() from None

    def _apply(self, names: Iterable[str], outbox_ids: list[int]) -> None:
        ordered = sorted(names)
        keys = [generation_key(n) for n in ordered]
        give_up = time.monotonic() + self.retry_for
        attempt = 0
        while True:
            with self.engine.connect() as conn:
                if self.with_lsn:
                    lsn = int(conn.execute(_DELETE_AND_LSN, {"ids": outbox_ids}).scalar_one())
                else:
                    conn.execute(delete(CacheOutbox).where(CacheOutbox.id.in_(outbox_ids)))
                    lsn = 0
                if self._bump(keys, ordered, lsn, force=attempt > 0):
                    conn.commit()
                    return
                conn.rollback()  # the rows stay: the invalidation is not done
            attempt += 1
            if time.monotonic() >= give_up:
                break
            time.sleep(self.retry_every)  # a failover in progress: the next attempt asks Sentinel anew
        self.pending = True
        log.warning("cache unreachable: %d invalidations kept in the outbox", len(outbox_ids))
        # Other processes may hold near counters (app/cache/near.py) that no push will
        # correct now: acknowledge the write only once none of them can still trust one.
        time.sleep(getattr(self.store, "near_trust", 0.0))

    def mark_pending(self) -> None:
        """The store came back: drain the outbox before the next cached read."""
        self.pending = True

    def drain(self) -> bool:
        """Apply every outbox row; True when the outbox is empty afterwards."""
        columns = [CacheOutbox.id, CacheOutbox.namespaces, *([_INSERT_LSN] if self.with_lsn else [])]
        with self.engine.begin() as conn:
            rows = conn.execute(select(*columns).order_by(CacheOutbox.id)).all()
            if not rows:
                self.pending = False
                return True
            names = sorted({name for row in rows for name in row[1].split()})
            # Read with the rows: at or past the commit of every one of them.
            lsn = max(int(row[2]) for row in rows) if self.with_lsn else 0
            if not self._bump([generation_key(n) for n in names], names, lsn, force=False):
                return False
            conn.execute(delete(CacheOutbox).where(CacheOutbox.id.in_([row[0] for row in rows])))
        log.info("cache outbox drained: %d rows, %d namespaces", len(rows), len(names))
        self.pending = False
        return True

    def drain_quietly(self) -> None:
        """drain() on the read path: a database that cannot answer leaves the rows for later."""
        try:
            self.drain()
        except (DBAPIError, PoolTimeout):
            log.warning("outbox not drained: database unavailable")

    def drain_forever(self, app: Flask, tick: float, sweep: float) -> None:
        """A worker's drain loop: apply the outbox when this process knows of pending rows, and
        every `sweep` s anyway (rows left by another, killed process). Never raises."""
        last_sweep = time.monotonic()
        while True:
            time.sleep(tick)
            now = time.monotonic()
            if not self.pending and now - last_sweep < sweep:
                continue
            last_sweep = now
            try:
                with app.app_context():
                    self.drain()
            except Exception as exc:  # the next tick retries; the loop must never die
                log.warning("cache outbox drain failed: %s", type(exc).__name__)


class Invalidation:
    """Flask extension: listens to every session's flushes and commits (once per process) and
    keeps one Invalidator per app."""

    key = "invalidation"
    _listening = False
    # Run after every commit, once its invalidations were applied (app/push rings its doorbell
    # there: a client that reacts to an event must read the new pages).
    _committed: list[Callable[[Session], None]] = []

    def init_app(self, app: Flask, engine: Any) -> None:
        app.extensions[self.key] = Invalidator(engine, float(app.config["CACHE_INVALIDATION_WAIT"]))
        if not Invalidation._listening:  # the listeners are per class: every app's sessions
            from flask_sqlalchemy.session import Session as session_class

            event.listen(session_class, "after_flush", _after_flush)
            event.listen(session_class, "before_commit", _before_commit)
            event.listen(session_class, "after_commit", self._after_commit)
            event.listen(session_class, "after_rollback", _after_rollback)
            Invalidation._listening = True

    def invalidator(self, app: Flask | None = None) -> Invalidator:
        invalidator: Invalidator = (app or current_app).extensions[self.key]
        return invalidator

    def after_commit(self, hook: Callable[[Session], None]) -> None:
        """Call `hook(session)` after each commit, once its invalidations were applied."""
        Invalidation._committed.append(hook)

    def _after_commit(self, session: Session) -> None:
        session.info.pop(_DB_COMMITTING, None)
        names = session.info.pop(_NAMESPACES, None)
        outbox_ids = session.info.pop(_OUTBOX_IDS, [])
        if names:
            self.invalidator().apply(names, outbox_ids)
        for hook in Invalidation._committed:
            hook(session)
