"""Comment reads: one post's thread, oldest first, keyset on (created_at, id)."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, select, tuple_

from app.exceptions import NotFound
from app.extensions import db
from app.models import Author, Comment, Post
from app.models.types import MAX_ID
from app.pagination import BOTTOM, Cursor, Page, page_rows
from app.services.items import author_item, comment_item
from app.services.posts import ensure_visible

# The page's rows exist only while the post is visible: no statement of its own for the check.
_POST_VISIBLE = select(Post.id).where(Post.id == bindparam("post_id"), Post.visible).exists()

_COLUMNS = (
    Comment.id,
    Comment.post_id,
    Author.id,
    Author.username,
    Author.display_name,
    Author.avatar_url,
    Comment.body,
    Comment.created_at,
)


@cache
def _thread_statement(direction: str) -> Select[*tuple[Any, ...]]:
    key = (Comment.created_at, Comment.id)
    position = tuple_(bindparam("position", type_=Comment.created_at.type), bindparam("item_id", type_=Comment.id.type))
    # The author is many-to-one: joined into the same statement, one row per comment.
    stmt = select(*_COLUMNS).join(Author, Author.id == Comment.author_id)
    stmt = stmt.where(Comment.post_id == bindparam("post_id"), _POST_VISIBLE)
    if direction == "next":
        stmt = stmt.where(tuple_(*key) > position).order_by(key[0].asc(), key[1].asc())
    else:
        stmt = stmt.where(tuple_(*key) < position).order_by(key[0].desc(), key[1].desc())
    return stmt.limit(bindparam("row_limit"))


def comments_page(post_id: int, after: Cursor | None, limit: int) -> Page:
    """One page of a visible post's comments in (created_at ASC, id ASC) order; NotFound when
    the post is missing or hidden. One statement; a second only when the page is empty (no
    comments there, or no such post: ensure_visible tells which)."""
    if post_id > MAX_ID:
        raise NotFound(f"No published post with id {post_id}.")
    direction = after.direction if after else "next"
    position, item_id = (after.position, after.id) if after else BOTTOM
    params = {"post_id": post_id, "position": position, "item_id": item_id, "row_limit": limit + 1}
    rows, has_more = page_rows(db.session.connection().execute(_thread_statement(direction), params), limit, direction)
    if not rows:
        ensure_visible(post_id)
    items = [
        comment_item(cid, pid, author_item(aid, username, display_name, avatar_url), body, created_at)
        for cid, pid, aid, username, display_name, avatar_url, body, created_at in rows
    ]
    return Page(items, has_more, direction, "created_at")
