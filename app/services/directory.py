"""Categories, tags and authors: slug lookups for feed scopes and the directory lists."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, select

from app.extensions import db
from app.models import Author, Category, Tag
from app.pagination import BOTTOM, Cursor, Page

_CATEGORY_ID = select(Category.id).where(Category.slug == bindparam("slug"))
_TAG_ID = select(Tag.id).where(Tag.slug == bindparam("slug"))
_AUTHOR_ID = select(Author.id).where(Author.username == bindparam("username"))
# The same lookups with the display name, for the titles of syndication feeds.
_CATEGORY_REF = select(Category.id, Category.name).where(Category.slug == bindparam("key"))
_TAG_REF = select(Tag.id, Tag.name).where(Tag.slug == bindparam("key"))
_AUTHOR_REF = select(Author.id, Author.display_name).where(Author.username == bindparam("key"))
_CATEGORIES = select(Category.id, Category.slug, Category.name, Category.post_count).order_by(
    Category.name, Category.id
)
# Served by ix_tags_popularity: the top N without sorting the table.
_TOP_TAGS = (
    select(Tag.id, Tag.slug, Tag.name, Tag.post_count)
    .order_by(Tag.post_count.desc(), Tag.id)
    .limit(bindparam("row_limit"))
)
_AUTHOR = select(
    Author.id,
    Author.username,
    Author.display_name,
    Author.avatar_url,
    Author.bio,
    Author.created_at,
    Author.post_count,
).where(Author.username == bindparam("username"))


def category_id(slug: str) -> int | None:
    return db.session.execute(_CATEGORY_ID, {"slug": slug}).scalar()


def tag_id(slug: str) -> int | None:
    return db.session.execute(_TAG_ID, {"slug": slug}).scalar()


def author_id(username: str) -> int | None:
    return db.session.execute(_AUTHOR_ID, {"username": username}).scalar()


def category_ref(slug: str) -> tuple[int, str] | None:
    return _ref(_CATEGORY_REF, slug)


def tag_ref(slug: str) -> tuple[int, str] | None:
    return _ref(_TAG_REF, slug)


def author_ref(username: str) -> tuple[int, str] | None:
    return _ref(_AUTHOR_REF, username)


def _ref(statement: Any, key: str) -> tuple[int, str] | None:
    row = db.session.execute(statement, {"key": key}).first()
    return None if row is None else (row[0], row[1])


def list_categories() -> list[dict[str, Any]]:
    return [
        {"id": cid, "slug": slug, "name": name, "post_count": count}
        for cid, slug, name, count in db.session.execute(_CATEGORIES)
    ]


def list_tags(limit: int) -> list[dict[str, Any]]:
    return [
        {"id": tid, "slug": slug, "name": name, "post_count": count}
        for tid, slug, name, count in db.session.execute(_TOP_TAGS, {"row_limit": limit})
    ]


def get_author(username: str) -> dict[str, Any] | None:
    row = db.session.execute(_AUTHOR, {"username": username}).first()
    if row is None:
        return None
    aid, uname, display_name, avatar_url, bio, created_at, post_count = row
    return {
        "id": aid,
        "username": uname,
        "display_name": display_name,
        "avatar_url": avatar_url,
        "bio": bio,
        "created_at": created_at,
        "post_count": post_count,
    }


@cache
def _authors_statement(direction: str) -> Select[*tuple[Any, ...]]:
    """Authors by id, ascending (`next`) or descending from a position (`prev`), off the primary key."""
    stmt = select(Author.id, Author.username, Author.display_name, Author.avatar_url)
    if direction == "next":
        stmt = stmt.where(Author.id > bindparam("item_id")).order_by(Author.id.asc())
    else:
        stmt = stmt.where(Author.id < bindparam("item_id")).order_by(Author.id.desc())
    return stmt.limit(bindparam("row_limit"))


def authors_page(after: Cursor | None, limit: int) -> Page:
    """One page of authors in id order (ids never change and new accounts join at the end, so a
    walk neither skips nor repeats anyone; the cursor's position part is unused, fixed at BOTTOM)."""
    direction = after.direction if after else "next"
    params = {"item_id": after.id if after else BOTTOM[1], "row_limit": limit + 1}
    rows = list(db.session.execute(_authors_statement(direction), params))
    has_more = len(rows) > limit
    del rows[limit:]
    if direction == "prev":
        rows.reverse()
    items = [
        {"id": aid, "username": username, "display_name": display_name, "avatar_url": avatar_url}
        for aid, username, display_name, avatar_url in rows
    ]
    return Page(items, has_more, direction, "id", positions=[(BOTTOM[0], item["id"]) for item in items])
