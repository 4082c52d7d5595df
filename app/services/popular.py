"""/popular: posts ranked by hotness, served from a snapshot computed at most once per interval.

Snapshots are named by the start of their interval (Unix seconds, aligned to the clock), so
every worker agrees on the current one without coordination; the first request of an interval
computes it (a PostgreSQL advisory lock keeps that to one process) and everyone else reads it.
A page is a range of ranks of one snapshot, joined to the live posts: an edit shows at once and
a post hidden since the snapshot is left out, while the order of the walk never changes, so a
cursor (which names its snapshot) neither repeats nor skips an item. Old snapshots are deleted
after the retention period; their cursors are then refused as expired.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from sqlalchemy import Integer, bindparam, delete, insert, select, text
from sqlalchemy.orm import Session

from app.exceptions import InvalidCursor
from app.extensions import db
from app.models import PopularRank, PopularSnapshot, Post
from app.pagination import Cursor, Page, page_rows, to_micros
from app.services.posts import LIST_COLUMNS, list_items, with_joins

_LOCK_KEY = 0x52575F504F50  # pg_advisory_xact_lock key for "a process is computing a snapshot"

_SNAPSHOT_EXISTS = select(PopularSnapshot.id).where(PopularSnapshot.id == bindparam("snapshot_id"))
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


def snapshot_time(snapshot_id: int) -> datetime:
    return datetime.fromtimestamp(snapshot_id, UTC)


def hotness(comment_count: int, age_hours: float, gravity: float) -> float:
    """More comments rank higher, and every post cools with age (Hacker News' formula)."""
    return (comment_count + 1) / (max(age_hours, 0.0) + 2) ** gravity


def ensure_snapshot(snapshot_id: int, now: float) -> None:
    """Compute the ranking for `snapshot_id` unless some process already has."""
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
