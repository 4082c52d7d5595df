"""Categories, tags and authors: slug lookups for feed scopes and the directory lists."""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import current_app
from sqlalchemy import Select, bindparam, select

from app.exceptions import NotFound
from app.extensions import db
from app.models import Author, Category, Tag
from app.pagination import BOTTOM, Cursor, Direction, Page, page_rows
from app.services.items import author_item
from app.services.statements import prepared_rows

_CATEGORY_ID = select(Category.id).where(Category.slug == bindparam("key"))
_TAG_ID = select(Tag.id).where(Tag.slug == bindparam("key"))
_AUTHOR_ID = select(Author.id).where(Author.username == bindparam("key"))
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


_IDS = {"category": _CATEGORY_ID, "tag": _TAG_ID, "author": _AUTHOR_ID}
_REFS = {"category": _CATEGORY_REF, "tag": _TAG_REF, "author": _AUTHOR_REF}


def scope_id(kind: str, key: str) -> int:
    """The id of the category/tag (by slug) or author (by username); NotFound if there is none."""
    # A prepared statement, as the page it precedes (app/services/statements.py): a feed's first
    # miss in this process pays it, under load every scope's first page (issue 11).
    rows = prepared_rows(_IDS[kind], {"key": key})
    if not rows:
        raise NotFound(f"No {kind} '{key}'.")
    found: int = rows[0][0]
    return found


# Scope ids this process has looked up, per app: a scoped feed's miss then costs no lookup
# statement (issue 11: a round trip of three). No endpoint renames or deletes a category, tag or
# author, so a slug keeps its id; only ids found are kept (an unknown slug is asked every time,
# it may be created). The page statement checks that the kept id still carries the slug (a
# one-time filter), and a caller that finds nothing under a kept id asks again
# (`scope_id_changed`), so a scope changed by hand costs one more lookup, never a wrong page.
_KNOWN = "readwire.scope_ids"
KNOWN_SCOPES_MAX = 100_000  # bounds the memory (~20 MB) whatever slugs clients try


def known_scope_id(kind: str, key: str) -> int:
    """scope_id, remembered per process."""
    known: dict[tuple[str, str], int] = current_app.extensions.setdefault(_KNOWN, {})
    found = known.get((kind, key))
    if found is None:
        found = scope_id(kind, key)
        if len(known) >= KNOWN_SCOPES_MAX:
            known.clear()
        known[(kind, key)] = found
    return found


def forget_known_scopes() -> None:
    """Drop this process's remembered scope ids (tests: a new process)."""
    current_app.extensions.pop(_KNOWN, None)


def scope_id_changed(kind: str, key: str, kept: int) -> int | None:
    """The scope's id read again (NotFound if it is gone), or None when it is still `kept`."""
    known: dict[tuple[str, str], int] = current_app.extensions.setdefault(_KNOWN, {})
    known.pop((kind, key), None)
    current = known_scope_id(kind, key)
    return None if current == kept else current


def scope_ref(kind: str, key: str) -> tuple[int, str]:
    """scope_id plus the display name (for the titles of syndication feeds)."""
    row = db.session.execute(_REFS[kind], {"key": key}).first()
    if row is None:
        raise NotFound(f"No {kind} '{key}'.")
    return row[0], row[1]


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


def get_author(username: str) -> dict[str, Any]:
    row = db.session.execute(_AUTHOR, {"username": username}).first()
    if row is None:
        raise NotFound(f"No author '{username}'.")
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
def _authors_statement(direction: Direction) -> Select[*tuple[Any, ...]]:
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
    rows, has_more = page_rows(db.session.execute(_authors_statement(direction), params), limit, direction)
    items = [author_item(*row) for row in rows]
    return Page(items, has_more, direction, "id", positions=[(BOTTOM[0], item["id"]) for item in items])
