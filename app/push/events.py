"""Events from writes: which posts changed visibly, written in the write's transaction.

While a session flushes, the posts it touches are noted with whether each was visible before
(and the categories, authors and tags it had). Before the commit, the final state of each is
read and one row per visible change goes to post_events: `post.created` (it became visible),
`post.updated` (visible before and after), `post.deleted` (it stopped being visible: deleted or
unpublished). Drafts make none, nor do comments. The rows' ids are taken under one
transaction-scoped advisory lock, held until the commit, so ids grow in commit order: a reader
that has seen id N has seen every committed event below N (what makes a position resumable).
After the commit, and after the cache generations were bumped (so a client that reacts to the
event reads the new pages), the process rings the doorbell (app/push/hub.py) with the events in
it. A rollback writes and rings nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from itertools import chain
from typing import Any

import orjson
from sqlalchemy import bindparam, insert, inspect, select, text
from sqlalchemy.orm import Session

from app.models import Author, Category, Post, PostEvent, PostTag, Tag
from app.observability import push_trace as trace
from app.urls import POSTS_PATH

_TOUCHED = "push.touched"  # session.info keys
_WRITTEN = "push.written"
_BATCH = "push.batch"  # the committed events themselves: the doorbell carries them (app/push/hub.py)
Row = tuple[int, str, str, str]  # an event as the doorbell carries it: id, kind, scopes, data
# pg_advisory_xact_lock key: "rw" + "ev" in ASCII. Held from the events' INSERT to the commit.
EVENTS_LOCK = 0x72770065
_JSON = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z | orjson.OPT_OMIT_MICROSECONDS


@dataclass
class Touch:
    was_visible: bool | None  # None: only its tag links changed (then its visibility did not)
    categories: set[int] = field(default_factory=set)
    authors: set[int] = field(default_factory=set)
    tags: set[int] = field(default_factory=set)


def _before(obj: Any, attr: str) -> Any:
    history = inspect(obj).attrs[attr].history
    return history.deleted[0] if history.deleted else getattr(obj, attr)


def _values(obj: Any, attr: str) -> set[Any]:
    history = inspect(obj).attrs[attr].history
    return {v for v in chain(history.deleted or (), history.added or (), history.unchanged or ()) if v is not None}


def after_flush(session: Session, flush_context: Any) -> None:
    """Note the posts this flush touches (history still holds the pre-flush values here)."""
    touched: dict[int, Touch] | None = session.info.get(_TOUCHED)
    for obj in chain(session.new, session.dirty, session.deleted):
        if isinstance(obj, Post):
            if touched is None:
                touched = session.info[_TOUCHED] = {}
            was = (
                False
                if obj in session.new
                else _before(obj, "status") == "published" and _before(obj, "deleted_at") is None
            )
            touch = touched.setdefault(obj.id, Touch(was))
            if touch.was_visible is None:
                touch.was_visible = was
            touch.categories |= _values(obj, "category_id")
            touch.authors |= _values(obj, "author_id")
        elif isinstance(obj, PostTag):
            if touched is None:
                touched = session.info[_TOUCHED] = {}
            touched.setdefault(obj.post_id, Touch(None)).tags |= _values(obj, "tag_id")


def before_commit(session: Session, site_url: str, api_root: str) -> set[str] | None:
    """Write this transaction's events; the scopes they touch (None: no event). A post's `url`
    is spelled as the API spells it (app/services/items.py:post_urls): `<site_url>/posts/<slug>`,
    else `<api_root>/api/v1/posts/<id>`, where an `api_root` of ROOT_URL is filled per stream."""
    if session.new or session.dirty or session.deleted:
        session.flush()  # changes still pending are part of this transaction's events
    touched: dict[int, Touch] | None = session.info.pop(_TOUCHED, None)
    if not touched:
        return None
    conn = session.connection()
    rows = _events(conn, touched, site_url, api_root)
    if not rows:
        return None
    if conn.dialect.name == "postgresql":  # SQLite runs one writer at a time anyway
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENTS_LOCK})
        trace.mark("locked")
    ids = dict(conn.execute(insert(PostEvent).values(rows).returning(PostEvent.post_id, PostEvent.id)).all())
    trace.mark("inserted")
    session.info[_WRITTEN] = max(max(ids.values()), session.info.get(_WRITTEN, 0))
    batch = session.info.setdefault(_BATCH, [])
    batch += sorted((ids[row["post_id"]], row["kind"], row["scopes"], row["data"]) for row in rows)
    return {scope for row in rows for scope in row["scopes"].split()}


def committed(session: Session) -> tuple[int, list[Row]] | None:
    """After the commit: the highest event id it made durable and its events, (id, kind, scopes,
    data) in id order (None: it made none)."""
    written: int | None = session.info.pop(_WRITTEN, None)
    batch: list[Row] = sorted(session.info.pop(_BATCH, []))
    return None if written is None else (written, batch)


def after_rollback(session: Session) -> None:
    session.info.pop(_TOUCHED, None)
    session.info.pop(_WRITTEN, None)
    session.info.pop(_BATCH, None)
    trace.drop()


# The slugs of scopes a post left, per kind: built once, the ids an expanding parameter.
_SLUG_QUERIES = {
    kind: select(id_column, column).where(id_column.in_(bindparam("ids", expanding=True)))
    for kind, column, id_column in (
        ("category", Category.slug, Category.id),
        ("author", Author.username, Author.id),
        ("tag", Tag.slug, Tag.id),
    )
}


def _slugs(conn: Any, kind: str, ids: Iterable[int]) -> dict[int, str]:
    wanted = sorted(ids)
    if not wanted:
        return {}
    return {row[0]: row[1] for row in conn.execute(_SLUG_QUERIES[kind], {"ids": wanted})}


@cache
def _posts_query(dialect: str) -> Any:
    """The touched posts with their category, author and tags: built once per dialect (a write
    used to spend ~1.5 ms of its ~20 ms of CPU constructing it), the ids an expanding parameter."""
    from app.services.posts import tags_of  # the feeds' tag column; app.services imports app.push

    return (
        select(
            Post.id, Post.slug, Post.title, Post.status, Post.deleted_at, Post.published_at, Post.updated_at,
            Post.category_id, Post.author_id, Category.slug.label("category"), Author.username,
            tags_of(dialect).label("tags"),
        )
        .join(Category, Category.id == Post.category_id)
        .join(Author, Author.id == Post.author_id)
        .where(Post.id.in_(bindparam("ids", expanding=True)))
    )  # fmt: skip


def _events(conn: Any, touched: dict[int, Touch], site_url: str, api_root: str) -> list[dict[str, Any]]:
    """The event rows for the touched posts: one query (posts with their category, author and
    tags), a second only when a post left a category, author or tag."""
    ids = sorted(touched)
    current = {row.id: row for row in conn.execute(_posts_query(conn.dialect.name), {"ids": ids})}
    tags: dict[int, dict[int, str]] = {
        post_id: {tag["id"]: tag["slug"] for tag in row.tags or ()} for post_id, row in current.items()
    }
    categories = {row.category_id: row.category for row in current.values()}
    authors = {row.author_id: row.username for row in current.values()}
    tag_slugs = {tag_id: slug for links in tags.values() for tag_id, slug in links.items()}
    plans: list[tuple[str, int, Touch, Any]] = []
    for post_id in ids:
        touch, row = touched[post_id], current.get(post_id)
        visible = row is not None and row.status == "published" and row.deleted_at is None
        was = visible if touch.was_visible is None else touch.was_visible
        kind = "post.created" if visible and not was else "post.updated" if visible else "post.deleted" if was else ""
        if kind:
            plans.append((kind, post_id, touch, row))
    if not plans:
        return []
    # Scopes a post left in this transaction (a category or tag changed): their slugs too.
    categories |= _slugs(conn, "category", {c for p in plans for c in p[2].categories} - set(categories))
    authors |= _slugs(conn, "author", {a for p in plans for a in p[2].authors} - set(authors))
    tag_slugs |= _slugs(conn, "tag", {t for p in plans for t in p[2].tags} - set(tag_slugs))
    # When the event was written, just before the commit (commit-to-event delays are measured from it).
    now = datetime.now(UTC)
    written_at = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    trace.begin(now.timestamp())
    rows: list[dict[str, Any]] = []
    for kind, post_id, touch, row in plans:
        own_tags = set(tags.get(post_id, {}))
        post_categories = touch.categories | ({row.category_id} if row is not None else set())
        post_authors = touch.authors | ({row.author_id} if row is not None else set())
        scopes = ["all"]
        scopes += sorted(f"category:{categories[c]}" for c in post_categories if c in categories)
        scopes += sorted(f"tag:{tag_slugs[t]}" for t in touch.tags | own_tags if t in tag_slugs)
        scopes += sorted(f"author:{authors[a]}" for a in post_authors if a in authors)
        post: dict[str, Any] = {"id": post_id}
        if kind != "post.deleted":
            post.update(
                slug=row.slug,
                title=row.title,
                url=f"{site_url}/posts/{row.slug}" if site_url else f"{api_root}{POSTS_PATH}{post_id}",
                published_at=row.published_at,
                updated_at=row.updated_at,
                category=row.category,
                tags=sorted(tag_slugs[t] for t in own_tags),
                author=row.username,
            )
        event = {"type": kind, "post": post, "written_at": written_at}
        data = orjson.dumps(event, option=_JSON).decode()
        rows.append({"kind": kind, "post_id": post_id, "scopes": " ".join(scopes), "data": data})
    return rows
