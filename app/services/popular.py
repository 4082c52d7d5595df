"""/popular: posts ranked by hotness, served from a snapshot computed at most once per interval.

Snapshots are named by the start of their interval (Unix seconds, aligned to the clock), so
every worker agrees on the current one without coordination. Each gunicorn worker runs
`build_ahead_forever`: POPULAR_BUILD_AHEAD seconds before an interval starts, the snapshot for it
is computed (ranked as of the interval's start; a PostgreSQL advisory lock keeps that to one
process, the others wait for it and then know it exists). A first page is served from the
current interval's snapshot when it exists; when it does not yet (the builder is late, or there is
none: `make run`), from the newest one before it, while a background build is started: no
request waits for a ranking. Only a table with no snapshot at all makes a request compute one.
Each process remembers which snapshots exist, so naming the snapshot of a first page (part of its
cache key) costs no query; it looks at the table at most once a second while the current one is
missing. POPULAR_BUILD_AHEAD=0 turns all of that off: the first request of an interval computes it.

A page is a range of ranks of one snapshot, joined to the live posts: an edit shows at once and
a post hidden since the snapshot is left out, while the order of the walk never changes, so a
cursor (which names its snapshot) neither repeats nor skips an item. Old snapshots are deleted
after the retention period; their cursors are then refused as expired.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from flask import Flask, current_app
from sqlalchemy import Integer, bindparam, delete, insert, select, text
from sqlalchemy.orm import Session

from app.exceptions import InvalidCursor
from app.extensions import db
from app.models import PopularRank, PopularSnapshot, Post
from app.pagination import Cursor, Page, page_rows, to_micros
from app.services.posts import LIST_COLUMNS, list_items, with_joins

log = logging.getLogger(__name__)
_LOCK_KEY = 0x52575F504F50  # pg_advisory_xact_lock key for "a process is computing a snapshot"
_STATE = "popular"  # app.extensions key
_LOOK_EVERY = 1.0  # s: how often a process looks for the current snapshot while it is missing

_SNAPSHOT_EXISTS = select(PopularSnapshot.id).where(PopularSnapshot.id == bindparam("snapshot_id"))
_NEWEST_UP_TO = (
    select(PopularSnapshot.id)
    .where(PopularSnapshot.id <= bindparam("snapshot_id"))
    .order_by(PopularSnapshot.id.desc())
    .limit(1)
)
# Served by ix_posts_feed: the newest visible posts, no sort.
_CANDIDATES = (
    select(Post.id, Post.published_at, Post.comment_count)
    .where(Post.visible)
    .order_by(Post.published_at.desc(), Post.id.desc())
    .limit(bindparam("candidates"))
)


def _page_statement(direction: str) -> Any:
    stmt = with_joins(
        select(*LIST_COLUMNS, PopularRank.rank).select_from(PopularRank).join(Post, Post.id == PopularRank.post_id)
    ).where(PopularRank.snapshot_id == bindparam("snapshot_id"), Post.visible)
    rank: Any = bindparam("rank", type_=Integer())
    if direction == "next":
        stmt = stmt.where(PopularRank.rank > rank).order_by(PopularRank.rank)
    else:
        stmt = stmt.where(PopularRank.rank < rank).order_by(PopularRank.rank.desc())
    return stmt.limit(bindparam("row_limit"))


_PAGE = {"next": _page_statement("next"), "prev": _page_statement("prev")}


def snapshot_for(now: float) -> int:
    """The snapshot that serves first pages at `now`: the start of the current interval."""
    interval = int(current_app.config["POPULAR_INTERVAL"])
    return int(now // interval) * interval


class Known:
    """The snapshots this process knows to exist (and when it last looked at the table)."""

    def __init__(self) -> None:
        self.ids: set[int] = set()
        self.looked_at = float("-inf")  # monotonic
        self.building: set[int] = set()  # background builds this process started
        self.lock = threading.Lock()

    def add(self, snapshot_id: int, oldest: int) -> None:
        with self.lock:
            self.ids = {i for i in self.ids if i >= oldest} | {snapshot_id}

    def newest_before(self, snapshot_id: int) -> int | None:
        return max((i for i in self.ids if i < snapshot_id), default=None)


def init_app(app: Flask) -> None:
    app.extensions[_STATE] = Known()


def _known() -> Known:
    known: Known = current_app.extensions[_STATE]
    return known


def serving_snapshot(now: float) -> int:
    """The snapshot a first page is served from at `now` (see the module docstring): the current
    interval's if it exists, else the newest before it (a build of the current one is started in
    the background), else, on an empty table only, the current one computed now."""
    current = snapshot_for(now)
    config = current_app.config
    if not config["POPULAR_BUILD_AHEAD"] or current in (known := _known()).ids:
        return current
    oldest = current - int(config["POPULAR_RETENTION"])
    if time.monotonic() - known.looked_at >= _LOOK_EVERY:
        known.looked_at = time.monotonic()
        found = db.session.execute(_NEWEST_UP_TO, {"snapshot_id": current}).scalar()
        if found is not None:
            known.add(int(found), oldest)
        if found == current:
            return current
    previous = known.newest_before(current)
    if previous is None or previous < oldest:
        ensure_snapshot(current, now)  # nothing to serve meanwhile: an empty table
        known.add(current, oldest)
        return current
    _build_in_background(current)
    return previous


def _build_in_background(snapshot_id: int) -> None:
    known = _known()
    with known.lock:
        if snapshot_id in known.building:
            return
        known.building.add(snapshot_id)
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def build() -> None:
        try:
            with app.app_context():
                ensure_snapshot(snapshot_id, time.time())
                known.add(snapshot_id, snapshot_id - int(app.config["POPULAR_RETENTION"]))
                db.session.remove()
        except Exception as exc:  # requests keep the previous snapshot; the next look retries
            log.warning("popular snapshot %d not built: %s", snapshot_id, type(exc).__name__)
        finally:
            with known.lock:
                known.building.discard(snapshot_id)

    threading.Thread(target=build, name="popular-build", daemon=True).start()


def build_ahead_forever(app: Flask, stop: threading.Event | None = None) -> None:
    """A worker's builder loop: POPULAR_BUILD_AHEAD s before each interval starts, make sure its
    snapshot exists (one process computes it under the advisory lock, the others wait for it),
    ranked as of the interval's start; then wait for the next one. Never raises; `stop` ends it
    (tests; gunicorn kills the greenlet)."""
    interval = int(app.config["POPULAR_INTERVAL"])
    ahead = min(float(app.config["POPULAR_BUILD_AHEAD"]), interval / 2)
    known: Known = app.extensions[_STATE]
    stop = stop or threading.Event()
    while not stop.is_set():
        upcoming = (int(time.time()) // interval + 1) * interval
        if stop.wait(max(0.0, upcoming - ahead - time.time())):
            return
        try:
            with app.app_context():
                ensure_snapshot(upcoming, float(upcoming))
                known.add(upcoming, upcoming - int(app.config["POPULAR_RETENTION"]))
                db.session.remove()
        except Exception as exc:  # the fallback covers this interval; the loop must never die
            log.warning("popular snapshot %d not built ahead: %s", upcoming, type(exc).__name__)
        stop.wait(max(0.0, upcoming - time.time()) + 0.01)  # into the interval just prepared


def snapshot_time(snapshot_id: int) -> datetime:
    return datetime.fromtimestamp(snapshot_id, UTC)


def hotness(comment_count: int, age_hours: float, gravity: float) -> float:
    """More comments rank higher, and every post cools with age (Hacker News' formula)."""
    return (comment_count + 1) / (max(age_hours, 0.0) + 2) ** gravity


def ensure_snapshot(snapshot_id: int, now: float) -> None:
    """Compute the ranking for `snapshot_id`, as of `now`, unless some process already has."""
    if db.session.execute(_SNAPSHOT_EXISTS, {"snapshot_id": snapshot_id}).first() is not None:
        return
    config = current_app.config
    # Its own transaction (committed even if the page read fails later); a Session over the
    # engine rather than engine.begin() so it also joins a test's outer transaction.
    with Session(db.engine) as session, session.begin():
        conn = session.connection()
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        if conn.execute(_SNAPSHOT_EXISTS, {"snapshot_id": snapshot_id}).first() is not None:
            return  # computed while this process waited for the lock
        gravity = float(config["POPULAR_GRAVITY"])
        now_micros = int(now * 1_000_000)
        candidates: Any = conn.execute(_CANDIDATES, {"candidates": config["POPULAR_CANDIDATES"]})
        scored = []
        for pid, published, comments in candidates:
            at = to_micros(published)
            scored.append((hotness(comments, (now_micros - at) / 3.6e9, gravity), at, pid))
        scored.sort(reverse=True)  # hottest first; ties: newer first, then higher id
        del scored[int(config["POPULAR_SIZE"]) :]
        computed_at = datetime.fromtimestamp(now, UTC)
        conn.execute(insert(PopularSnapshot).values(id=snapshot_id, computed_at=computed_at, size=len(scored)))
        if scored:
            conn.execute(
                insert(PopularRank),
                [
                    {"snapshot_id": snapshot_id, "rank": rank, "post_id": pid, "score": score}
                    for rank, (score, _, pid) in enumerate(scored, start=1)
                ],
            )
        expired = snapshot_id - int(config["POPULAR_RETENTION"])
        conn.execute(delete(PopularRank).where(PopularRank.snapshot_id < expired))
        conn.execute(delete(PopularSnapshot).where(PopularSnapshot.id < expired))


def popular_page(snapshot_id: int, after: Cursor | None, limit: int) -> Page:
    """One page of a snapshot's ranking, hottest first; cursor positions are (snapshot, rank).

    The first page of an interval computes its snapshot if no process has yet."""
    if after is None:
        ensure_snapshot(snapshot_id, time.time())
    if after is not None and db.session.execute(_SNAPSHOT_EXISTS, {"snapshot_id": snapshot_id}).first() is None:
        raise InvalidCursor("This cursor's ranking snapshot has expired; start again from the first page.")
    direction = after.direction if after else "next"
    rank = after.id if after else 0
    params = {"snapshot_id": snapshot_id, "rank": rank, "row_limit": limit + 1}
    rows, has_more = page_rows(db.session.execute(_PAGE[direction], params), limit, direction)
    at = snapshot_time(snapshot_id)
    return Page(list_items(rows), has_more, direction, "published_at", positions=[(at, row[14]) for row in rows])


def cursor_snapshot(after: Cursor) -> int:
    return to_micros(after.position) // 1_000_000
