"""Commit-gated invalidation.

While a session flushes, the rows its changes touch are noted (by id, from the ORM's history:
no SQL). Just before the commit, after the last flush, they are resolved to cache namespaces
(ids -> slugs, one query in the same transaction) and written to cache_outbox, and the same
namespaces bumped in the database (app/cache/generations.py: what readers check their near copies
against while Redis is unreachable), both in one statement. After the commit they are bumped in
the store (one INCR each, in one atomic step) and the outbox rows deleted. A rollback bumps
nothing. If the store cannot take the INCRs, the write keeps trying for CACHE_INVALIDATION_WAIT
(a Redis failover), then the rows stay and are drained before this process reads from the cache
again, whenever the circuit breaker sees the store come back, and by each worker's drain loop
(rows left by a process killed between its commit and its INCRs).

A post write costs two statements here however often it flushes (it was 5 per flush plus the
bump: 12 for POST /posts, whose post and tag rows flush separately).

On PostgreSQL each bump also carries the write's commit LSN (for replica reads, app/replicas.py):
`pg_current_wal_insert_lsn()` read after the write's COMMIT, at or past the end of its commit
record. After the COMMIT a write waits for three round trips: that position (autocommit), the bump
(the doorbell of app/push is PUBLISHed right after it, as the near counters' barrier:
app/cache/store.py), and the outbox rows' DELETE (autocommit), only once the store has the bump and
after the after-commit hooks. Each round trip is a wait during which a gevent worker runs its other
greenlets first: the doorbell followed the COMMIT after six (BEGIN, the DELETE that read the
position, the bump, PING, COMMIT, PUBLISH), and a late write was late at every stream (issue 13).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app
from sqlalchemy import bindparam, delete, event, insert, inspect, literal, literal_column, or_, select, text, union_all
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from app.cache import generations
from app.cache.keys import generation_key, lsn_key
from app.deadline import at_least
from app.exceptions import OutcomeUnknown
from app.models import Author, CacheOutbox, Category, Comment, Post, PostTag, Tag
from app.models.types import utcnow
from app.observability import push_trace as trace

if TYPE_CHECKING:
    from app.cache.store import Announcement, Store

log = logging.getLogger(__name__)
# After a write's COMMIT, its invalidation (one statement and the INCRs) gets this long past the
# request's database deadline (app/deadline.py): a write that committed in the last milliseconds
# of its budget is still acknowledged, and a request waits at most the deadline + this. The same
# 0.5 s as Nginx's cache lock (nginx.conf), so nothing through the edge waits longer than the
# deadline + 0.5 s (the chaos scenario judges the deadline + 1 s: half a second for scheduling).
AFTER_COMMIT_S = 0.5
_NAMESPACES = "invalidation.namespaces"  # session.info keys
_OUTBOX_IDS = "invalidation.outbox_ids"
_TOUCHED = "invalidation.touched"  # what this transaction's flushes changed, not yet recorded
_DB_COMMITTING = "invalidation.db_committing"  # recorded at before_commit: later flushes record at once


def _old_and_new(obj: Any, attr: str) -> set[Any]:
    history = inspect(obj).attrs[attr].history
    return {v for v in chain(history.deleted or (), history.added or (), history.unchanged or ()) if v is not None}


@dataclass
class Touched:
    """What a transaction's flushes changed, by id (resolved to namespaces once, before commit)."""

    posts: set[int] = field(default_factory=set)
    categories: set[int] = field(default_factory=set)
    authors: set[int] = field(default_factory=set)
    tags: set[int] = field(default_factory=set)
    commented: set[int] = field(default_factory=set)  # posts with a new comment
    accounts: set[str] = field(default_factory=set)  # usernames, old and new, of changed authors

    def __bool__(self) -> bool:
        return bool(self.posts or self.categories or self.authors or self.tags or self.commented or self.accounts)


def _touch(session: Session, touched: Touched) -> None:
    """Add what this flush changes to `touched` (history still holds the pre-flush values)."""
    for obj in chain(session.new, session.dirty, session.deleted):
        if isinstance(obj, Post):
            touched.posts.add(obj.id)
            touched.categories |= _old_and_new(obj, "category_id")
            touched.authors |= _old_and_new(obj, "author_id")
        elif isinstance(obj, PostTag):
            touched.posts.add(obj.post_id)
            touched.tags |= _old_and_new(obj, "tag_id")
        elif isinstance(obj, Comment):
            touched.commented.add(obj.post_id)
    for obj in chain(session.new, session.dirty):
        if isinstance(obj, Author):  # a new or changed account (the CLI's)
            touched.accounts |= _old_and_new(obj, "username")


def _build_slug_lookup() -> Any:
    """One statement: (kind, slug) of every category, tag and author the touched posts had or
    have now (their rows in this transaction) plus the ids noted from history. Built once (its
    construction was ~1 ms of a write's CPU); the id lists are expanding parameters."""
    posts: Any = bindparam("posts", expanding=True)
    post_rows = select(Post.category_id, Post.author_id).where(Post.id.in_(posts)).subquery()
    return union_all(
        select(literal("cat"), Category.slug).where(
            or_(
                Category.id.in_(bindparam("categories", expanding=True)),
                Category.id.in_(select(post_rows.c.category_id)),
            )
        ),
        select(literal("tag"), Tag.slug).where(
            or_(
                Tag.id.in_(bindparam("tags", expanding=True)),
                Tag.id.in_(select(PostTag.tag_id).where(PostTag.post_id.in_(posts))),
            )
        ),
        select(literal("author"), Author.username).where(
            or_(Author.id.in_(bindparam("authors", expanding=True)), Author.id.in_(select(post_rows.c.author_id)))
        ),
    )


_SLUG_LOOKUP = _build_slug_lookup()


def namespaces_for(conn: Any, touched: Touched) -> set[str]:
    """Every cache namespace whose pages the touched rows make out of date (at most one query)."""
    # A new or changed account: the authors list and its own page (a cached 404 included).
    names = {"directory", *(f"author:{name}" for name in touched.accounts)} if touched.accounts else set()
    if not (touched.posts or touched.commented):
        return names
    names |= {f"post:{p}" for p in touched.posts | touched.commented}
    names |= {f"comments:{p}" for p in touched.commented}
    if touched.posts:
        names |= {"feed", "directory"}
    if touched.posts or touched.categories or touched.tags or touched.authors:
        params = {
            "posts": sorted(touched.posts),
            "categories": sorted(touched.categories),
            "tags": sorted(touched.tags),
            "authors": sorted(touched.authors),
        }
        names |= {f"{kind}:{slug}" for kind, slug in conn.execute(_SLUG_LOOKUP, params)}
    return names


# On PostgreSQL the outbox row and the database generations (app/cache/generations.py) in one
# statement: the bump rides in a data-modifying CTE.
_RECORD = text(
    "WITH bumped AS (" + generations.BUMP_SQL + ")"
    " INSERT INTO cache_outbox (namespaces, created_at) VALUES (:namespaces, :created_at) RETURNING id"
).bindparams(generations.NAMES)


def _record(session: Session, names: set[str]) -> None:
    """Write `names` to the outbox (and bump them in the database) in the session's transaction;
    remember them for after the commit."""
    conn = session.connection()
    ordered = sorted(names)
    spelled = " ".join(ordered)
    if conn.dialect.name == "postgresql":
        params = {"names": ordered, "namespaces": spelled, "created_at": utcnow()}
        outbox_id = conn.execute(_RECORD, params).scalar_one()
    else:  # SQLite: the in-process store is never unreachable, so no database generations
        outbox_id = conn.execute(insert(CacheOutbox).values(namespaces=spelled).returning(CacheOutbox.id)).scalar_one()
    session.info.setdefault(_NAMESPACES, set()).update(names)
    session.info.setdefault(_OUTBOX_IDS, []).append(outbox_id)


def _after_flush(session: Session, flush_context: Any) -> None:
    """Note what the flush changed; no SQL until the commit (a write flushes several times). A
    flush after before_commit (another listener's rows) is recorded at once."""
    if session.info.get(_DB_COMMITTING):
        touched = Touched()
        _touch(session, touched)
        if touched and (names := namespaces_for(session.connection(), touched)):
            _record(session, names)
        return
    pending: Touched | None = session.info.get(_TOUCHED)
    if pending is None:
        pending = session.info[_TOUCHED] = Touched()
    _touch(session, pending)


def _before_commit(session: Session) -> None:
    """After the last pending flush, once: the transaction's namespaces resolved (one query),
    written to the outbox and bumped in the database (one statement, sorted)."""
    if session.new or session.dirty or session.deleted:
        session.flush()
    touched: Touched | None = session.info.pop(_TOUCHED, None)
    if touched and (names := namespaces_for(session.connection(), touched)):
        _record(session, names)
    session.info[_DB_COMMITTING] = True


def _after_rollback(session: Session) -> None:
    session.info.pop(_NAMESPACES, None)
    session.info.pop(_OUTBOX_IDS, None)
    session.info.pop(_TOUCHED, None)
    session.info.pop(_DB_COMMITTING, None)


# The WAL insert position, read after the write's COMMIT: at or past its commit record.
_WAL_POSITION = text("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint")
# A write's outbox rows, once the store has their bump (built once: a Core delete() per write was
# ~3% of a POST's instructions, bench/gate.py post_create).
_FORGET = text("DELETE FROM cache_outbox WHERE id = ANY(:ids)").bindparams(bindparam("ids"))
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

    def _bump(self, keys: list[str], names: list[str], lsn: int, force: bool, announce: Announcement | None) -> bool:
        assert self.store is not None, "the page cache binds its store at init_app"
        lsn_keys = [lsn_key(n) for n in names] if lsn else ()
        return self.store.incr(keys, lsn_keys, lsn, force=force, announce=announce)

    def apply(
        self,
        names: Iterable[str],
        outbox_ids: list[int],
        announce: Announcement | None = None,
        then: Callable[[], None] = lambda: None,
    ) -> None:
        """After a write's COMMIT: bump its generations (the store PUBLISHes `announce` with the
        bump), call `then` (the after-commit hooks), and delete its outbox rows. If the database
        fails us before the bump (hung past the deadline, gone), the write is committed but its
        invalidation is not done: the rows stay for the drain loops, and the write is not
        acknowledged (OutcomeUnknown: the client must not be told to repeat it as if nothing
        happened). Once the bump is done, a failed DELETE only leaves the rows to the drain."""
        try:
            with at_least(AFTER_COMMIT_S):  # the COMMIT succeeded: finishing it may take a little more
                self._apply(names, outbox_ids, announce, then)
        except (DBAPIError, PoolTimeout) as exc:
            log.warning("write committed, invalidation left in the outbox: %s", type(exc).__name__)
            raise OutcomeUnknown() from None

    def _apply(
        self, names: Iterable[str], outbox_ids: list[int], announce: Announcement | None, then: Callable[[], None]
    ) -> None:
        ordered = sorted(names)
        keys = [generation_key(n) for n in ordered]
        give_up = time.monotonic() + self.retry_for
        with self.engine.connect() as conn:
            lsn = 0
            if self.with_lsn:  # autocommit: one round trip, no BEGIN and no COMMIT around it
                conn.execution_options(isolation_level="AUTOCOMMIT")
                lsn = int(conn.execute(_WAL_POSITION).scalar_one())
            trace.mark("outbox_sql")
            # Forced: tried even while this process's breaker is open. The breaker spares reads a
            # wait on a store that is down; a write that skipped its bump while the store was back
            # (the breaker still cooling down) left other processes serving pre-write pages until a
            # drain swept its outbox rows (the chaos run's redis-kill: a feed without an
            # acknowledged post 1.0-1.7 s after its create).
            if self._bump(keys, ordered, lsn, True, announce):
                trace.mark("bumped")
                # The hooks (app/push rings this process's hub, or the others' doorbell when the
                # store did not) before the outbox rows are deleted: from the write's COMMIT to its
                # doorbell, the WAL position and the bump only (issue 13).
                then()
                self._forget(conn, outbox_ids)
                return
        while time.monotonic() < give_up:  # a failover in progress: no connection held meanwhile
            time.sleep(self.retry_every)  # the next attempt asks Sentinel anew
            if self._bump(keys, ordered, lsn, True, announce):
                then()
                with self.engine.connect() as conn:
                    self._forget(conn, outbox_ids)
                return
        self.pending = True
        log.warning("cache unreachable: %d invalidations kept in the outbox", len(outbox_ids))
        # Other processes may hold near counters (app/cache/near.py) that no push will
        # correct now: acknowledge the write only once none of them can still trust one.
        time.sleep(getattr(self.store, "near_trust", 0.0))
        then()

    def _forget(self, conn: Any, outbox_ids: list[int]) -> None:
        """Delete a write's outbox rows once the store has its bump. Should the database fail now,
        the rows stay and a drain loop bumps their namespaces once more (pages rendered again,
        nothing stale): the write is acknowledged all the same, its invalidation being done."""
        try:
            if self.with_lsn:
                conn.execute(_FORGET, {"ids": outbox_ids})
            else:
                conn.execute(delete(CacheOutbox).where(CacheOutbox.id.in_(outbox_ids)))
            conn.commit()  # autocommit (PostgreSQL, after the position): nothing more is sent
            trace.mark("outbox_committed")
        except (DBAPIError, PoolTimeout) as exc:
            self.pending = True
            log.warning("outbox rows of a done invalidation kept for the drain: %s", type(exc).__name__)

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
            if not self._bump([generation_key(n) for n in names], names, lsn, False, None):
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
    # Asked after every commit, before its invalidations: a message for the store to PUBLISH with
    # the bump (app/push's doorbell; None: nothing to announce).
    _announcer: Callable[[Session], Announcement | None] | None = None

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

    def after_commit(
        self, hook: Callable[[Session], None], announcer: Callable[[Session], Announcement | None] | None = None
    ) -> None:
        """Call `hook(session)` after each commit, once its invalidations were applied (before the
        outbox rows are deleted); `announcer(session)`, before them: what the store PUBLISHes with
        the bump (one announcer per process)."""
        Invalidation._committed.append(hook)
        if announcer is not None:
            Invalidation._announcer = announcer

    def _after_commit(self, session: Session) -> None:
        trace.mark("committed")
        session.info.pop(_DB_COMMITTING, None)
        names = session.info.pop(_NAMESPACES, None)
        outbox_ids = session.info.pop(_OUTBOX_IDS, [])
        announcer = Invalidation._announcer
        announce = announcer(session) if announcer is not None else None

        def hooks() -> None:
            for hook in Invalidation._committed:
                hook(session)

        if names:
            self.invalidator().apply(names, outbox_ids, announce, hooks)
        else:
            hooks()
