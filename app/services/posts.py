"""Post reads: the feeds (keyset), post detail and bulk get.

Hot paths select the columns they need with Core statements built once per shape (the
compiled-statement cache then skips compilation), and build plain dicts: no ORM entities,
no marshmallow dump. A page is at most three statements: scope lookup (in the view's
service), the page itself, and the tags of the page's posts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from flask import current_app
from sqlalchemy import Row, Select, and_, bindparam, literal_column, select, tuple_

from app.extensions import db
from app.models import Author, Category, Post, PostTag, Tag
from app.pagination import TOP, Cursor, Page

ScopeKind = Literal["all", "category", "tag", "author"]
# A post's own URL under the API (app/api mounts the posts blueprint at /api/v1), its `url`
# when no PUBLIC_SITE_URL is configured: root-relative, so a stored page holds no host.
API_POSTS = "/api/v1/posts/"

# Matches the partial feed indexes' predicate as literals (a bound parameter would stop the
# planner from proving the index predicate once psycopg switches to prepared statements).
VISIBLE = and_(Post.status == literal_column("'published'"), Post.deleted_at.is_(None))

AUTHOR_COLUMNS = (Author.id, Author.username, Author.display_name, Author.avatar_url)
LIST_COLUMNS = (
    Post.id,
    Post.slug,
    Post.title,
    Post.summary,
    Post.published_at,
    Post.updated_at,
    Post.comment_count,
    *AUTHOR_COLUMNS,
    Category.id,
    Category.slug,
    Category.name,
)


@dataclass(frozen=True, slots=True)
class FeedScope:
    kind: ScopeKind
    id: int = 0


def with_joins(stmt: Select[*tuple[Any, ...]]) -> Select[*tuple[Any, ...]]:
    # Many-to-one joins (author, category) ride along in the page statement: one row per post.
    return stmt.join(Author, Author.id == Post.author_id).join(Category, Category.id == Post.category_id)


@cache
def _feed_statement(kind: ScopeKind, direction: str, with_body: bool = False) -> Select[*tuple[Any, ...]]:
    """The page statement for one scope kind and walk direction (built once, then reused);
    `with_body` adds the post body (the syndication feeds carry it as their content)."""
    position = tuple_(bindparam("position", type_=Post.published_at.type), bindparam("item_id", type_=Post.id.type))
    columns = (*LIST_COLUMNS, Post.body) if with_body else LIST_COLUMNS
    if kind == "tag":
        key = (PostTag.published_at, PostTag.post_id)
        stmt = with_joins(select(*columns).select_from(PostTag).join(Post, Post.id == PostTag.post_id))
        stmt = stmt.where(PostTag.tag_id == bindparam("scope_id"), PostTag.published_at.is_not(None), VISIBLE)
    else:
        key = (Post.published_at, Post.id)
        stmt = with_joins(select(*columns).select_from(Post)).where(VISIBLE)
        if kind == "category":
            stmt = stmt.where(Post.category_id == bindparam("scope_id"))
        elif kind == "author":
            stmt = stmt.where(Post.author_id == bindparam("scope_id"))
    if direction == "next":
        stmt = stmt.where(tuple_(*key) < position).order_by(key[0].desc(), key[1].desc())
    else:
        stmt = stmt.where(tuple_(*key) > position).order_by(key[0].asc(), key[1].asc())
    return stmt.limit(bindparam("row_limit"))


_TAGS_OF_POSTS = (
    select(PostTag.post_id, Tag.id, Tag.slug, Tag.name)
    .join(Tag, Tag.id == PostTag.tag_id)
    .where(PostTag.post_id.in_(bindparam("post_ids", expanding=True)))
    .order_by(PostTag.post_id, Tag.slug)
)


def post_url(site_url: str, post_id: int, slug: str) -> str:
    """The post's page on PUBLIC_SITE_URL, else its URL under the API (root-relative)."""
    return f"{site_url}/posts/{slug}" if site_url else f"{API_POSTS}{post_id}"


def post_item(row: Row[Any], site_url: str, body: str | None = None) -> dict[str, Any]:
    (pid, slug, title, summary, published_at, updated_at, comment_count,
     aid, username, display_name, avatar_url, cid, cslug, cname) = tuple(row)[:14]  # fmt: skip
    item: dict[str, Any] = {
        "id": pid,
        "slug": slug,
        "title": title,
        "summary": summary,
    }
    if body is not None:
        item["body"] = body
    item.update(
        url=f"{site_url}/posts/{slug}" if site_url else f"{API_POSTS}{pid}",
        published_at=published_at,
        updated_at=updated_at,
        author={"id": aid, "username": username, "display_name": display_name, "avatar_url": avatar_url},
        category={"id": cid, "slug": cslug, "name": cname},
        tags=[],
        comment_count=comment_count,
    )
    return item


def attach_tags(items: Sequence[dict[str, Any]]) -> None:
    """Fill each item's tags with one statement for the whole page (never one per post)."""
    if not items:
        return
    by_id = {item["id"]: item for item in items}
    for post_id, tag_id, slug, name in db.session.execute(_TAGS_OF_POSTS, {"post_ids": list(by_id)}):
        by_id[post_id]["tags"].append({"id": tag_id, "slug": slug, "name": name})


def feed_page(scope: FeedScope, after: Cursor | None, limit: int, with_body: bool = False) -> Page:
    """One page of a feed, newest first, in (published_at DESC, id DESC) order (items with
    their `body` when asked: same statements, one more column)."""
    direction = after.direction if after else "next"
    position, item_id = (after.position, after.id) if after else TOP
    params = {"position": position, "item_id": item_id, "row_limit": limit + 1, "scope_id": scope.id}
    statement = _feed_statement(scope.kind, direction, with_body)
    rows, has_more = page_rows(db.session.execute(statement, params), limit, direction)
    return Page(list_items(rows, with_body), has_more, direction, "published_at")


def page_rows(result: Iterable[Any], limit: int, direction: str) -> tuple[list[Any], bool]:
    """The page's rows in display order from a LIMIT limit+1 result, and whether more remain."""
    rows = list(result)
    has_more = len(rows) > limit
    del rows[limit:]
    if direction == "prev":  # fetched walking back: flip to display order
        rows.reverse()
    return rows, has_more


def list_items(rows: Sequence[Row[Any]], with_body: bool = False) -> list[dict[str, Any]]:
    """List-view post dicts for page rows, with their tags (one statement for the page)."""
    site_url = current_app.config["PUBLIC_SITE_URL"]
    if with_body:
        items = [post_item(row, site_url, body=tuple(row)[14]) for row in rows]
    else:
        items = [post_item(row, site_url) for row in rows]
    attach_tags(items)
    return items


_POST_DETAIL = with_joins(select(*LIST_COLUMNS, Post.body).select_from(Post)).where(
    Post.id == bindparam("post_id"), VISIBLE
)
_POSTS_BY_IDS = with_joins(select(*LIST_COLUMNS).select_from(Post)).where(
    Post.id.in_(bindparam("post_ids", expanding=True)), VISIBLE
)


def get_post(post_id: int) -> dict[str, Any] | None:
    """One visible post with its body, or None when it is missing or hidden."""
    row = db.session.execute(_POST_DETAIL, {"post_id": post_id}).first()
    if row is None:
        return None
    item = post_item(row, current_app.config["PUBLIC_SITE_URL"], body=row[14])
    attach_tags([item])
    return item


def get_posts(ids: list[int]) -> list[dict[str, Any]]:
    """Visible posts among `ids`, in the order asked; missing or hidden ids are left out."""
    site_url = current_app.config["PUBLIC_SITE_URL"]
    found = {row[0]: post_item(row, site_url) for row in db.session.execute(_POSTS_BY_IDS, {"post_ids": ids})}
    items = [found[i] for i in ids if i in found]
    attach_tags(items)
    return items


_IS_VISIBLE = select(Post.id).where(Post.id == bindparam("post_id"), VISIBLE)


def is_visible(post_id: int) -> bool:
    return db.session.execute(_IS_VISIBLE, {"post_id": post_id}).first() is not None
