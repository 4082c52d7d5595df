"""Post reads: the feeds (keyset), post detail and bulk get.

Hot paths select the columns they need with Core statements built once per shape (the
compiled-statement cache then skips compilation), and build plain dicts: no ORM entities,
no marshmallow dump. A feed page is one statement, one round trip: each post's tags come
with its row (a correlated subquery aggregating them as JSON, in slug order), and a scoped
feed's id is looked up once per process (directory.known_scope_id). Detail and bulk get
bring the tags the same way (one statement each); /popular loads the tags of its snapshot's
posts with a second statement (attach_tags).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from sqlalchemy import JSON, Row, ScalarSelect, Select, bindparam, func, literal_column, select, true, tuple_
from sqlalchemy.dialects.postgresql import aggregate_order_by

from app.exceptions import NotFound
from app.extensions import db
from app.models import Author, Category, Post, PostTag, Tag
from app.models.types import MAX_ID
from app.pagination import TOP, Cursor, Page, page_rows
from app.services import directory
from app.services.items import post_item, post_urls
from app.services.statements import prepared_rows

ScopeKind = Literal["all", "category", "tag", "author"]

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
    key: str | None = None


def feed_scope(kind: ScopeKind, key: str | None) -> FeedScope:
    """The feed of one category, tag or author (by slug or username), or the global feed;
    NotFound when the scope does not exist."""
    return FeedScope("all") if key is None else FeedScope(kind, directory.known_scope_id(kind, key), key)


TAGS = len(LIST_COLUMNS)  # the row position of the tags column that follows LIST_COLUMNS


def _keyed(*columns: Any) -> list[Any]:
    """JSON object arguments: each column preceded by its name (a literal, not a parameter)."""
    arguments: list[Any] = []
    for column in columns:
        arguments += (literal_column(f"'{column.key}'"), column)
    return arguments


def tags_of(dialect: str) -> ScalarSelect[Any]:
    """The post's tags as a JSON array of {id, slug, name} in slug order (NULL when it has none),
    for the `posts` row of the enclosing statement."""
    links = PostTag.__table__.alias("post_tag")
    if dialect == "postgresql":
        # OFFSET 0 keeps the tag lookup a subquery of its own: flattened into a join, the planner
        # may hash all of `tags` for every post of the page instead of fetching each by its key.
        tag = select(Tag.id, Tag.slug, Tag.name).where(Tag.id == links.c.tag_id).offset(literal_column("0"))
        tag_row = tag.lateral("tag")
        item = func.json_build_object(*_keyed(tag_row.c.id, tag_row.c.slug, tag_row.c.name))
        aggregated = func.json_agg(aggregate_order_by(item, tag_row.c.slug), type_=JSON)
        tags = select(aggregated).select_from(links.join(tag_row, true()))
        return tags.where(links.c.post_id == Post.id).scalar_subquery()
    ordered = (
        select(Tag.id, Tag.slug, Tag.name)
        .join(links, links.c.tag_id == Tag.id)
        .where(links.c.post_id == Post.id)
        .order_by(Tag.slug)
        .subquery("tag")
    )  # SQLite (the embedded default) aggregates in the order rows arrive, so they arrive sorted
    item = func.json_object(*_keyed(ordered.c.id, ordered.c.slug, ordered.c.name))
    return select(func.json_group_array(item, type_=JSON)).scalar_subquery()


# Per scope kind: its table and the column naming it in URLs.
_SCOPE_NAMES = {"category": (Category, "slug"), "tag": (Tag, "slug"), "author": (Author, "username")}


def _still_named(kind: ScopeKind) -> Any:
    """The remembered scope id still carries its slug: a one-time filter of the page statement
    (no round trip of its own). No endpoint renames a scope, but a row changed by hand must not
    serve another scope's page under this one's name: the page comes back empty, and
    feed_page asks for the id again."""
    model, column = _SCOPE_NAMES[kind]
    scope = model.__table__.alias("scope")
    return (
        select(scope.c.id)
        .where(scope.c.id == bindparam("scope_id"), scope.c[column] == bindparam("scope_key"))
        .exists()
    )


def with_joins(stmt: Select[*tuple[Any, ...]]) -> Select[*tuple[Any, ...]]:
    # Many-to-one joins (author, category) ride along in the page statement: one row per post.
    return stmt.join(Author, Author.id == Post.author_id).join(Category, Category.id == Post.category_id)


@cache
def _feed_statement(dialect: str, kind: ScopeKind, direction: str, with_body: bool = False) -> Select[*tuple[Any, ...]]:
    """The page statement for one dialect, scope kind and walk direction (built once, then
    reused); `with_body` adds the post body (the syndication feeds carry it as their content)."""
    position = tuple_(bindparam("position", type_=Post.published_at.type), bindparam("item_id", type_=Post.id.type))
    columns = (*LIST_COLUMNS, tags_of(dialect), Post.body) if with_body else (*LIST_COLUMNS, tags_of(dialect))
    if kind == "tag":
        key = (PostTag.published_at, PostTag.post_id)
        stmt = with_joins(select(*columns).select_from(PostTag).join(Post, Post.id == PostTag.post_id))
        stmt = stmt.where(PostTag.tag_id == bindparam("scope_id"), PostTag.published_at.is_not(None), Post.visible)
    else:
        key = (Post.published_at, Post.id)
        stmt = with_joins(select(*columns).select_from(Post)).where(Post.visible)
        if kind == "category":
            stmt = stmt.where(Post.category_id == bindparam("scope_id"))
        elif kind == "author":
            stmt = stmt.where(Post.author_id == bindparam("scope_id"))
    if kind != "all":
        stmt = stmt.where(_still_named(kind))
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
    if scope.key is not None:
        params["scope_key"] = scope.key
    statement = _feed_statement(db.engine.dialect.name, scope.kind, direction, with_body)
    # A prepared statement on the driver, rows as tuples: none of the ORM's or Core's execution
    # and result layers, and PostgreSQL plans it once per connection (app/services/statements.py).
    rows, has_more = page_rows(prepared_rows(statement, params), limit, direction)
    if not rows and scope.key is not None:  # empty: is the remembered id still the scope's?
        current = directory.scope_id_changed(scope.kind, scope.key, scope.id)
        if current is not None:
            return feed_page(FeedScope(scope.kind, current, scope.key), after, limit, with_body)
    url_of = post_urls()
    if with_body:  # the body is the column after the tags
        items = [post_item(row, url_of, body=row[TAGS + 1], tags=row[TAGS] or []) for row in rows]
    else:
        items = [post_item(row, url_of, tags=row[TAGS] or []) for row in rows]
    return Page(items, has_more, direction, "published_at")


def list_items(rows: Sequence[Row[Any]]) -> list[dict[str, Any]]:
    """List-view post dicts for page rows of LIST_COLUMNS, with their tags (one statement for
    the page)."""
    url_of = post_urls()
    items = [post_item(row, url_of) for row in rows]
    attach_tags(items)
    return items


@cache
def _post_statement(dialect: str, hidden: bool) -> Select[*tuple[Any, ...]]:
    """One post with its body and its tags in one statement (`hidden`: drafts and deleted too)."""
    columns = (*LIST_COLUMNS, tags_of(dialect), Post.body)
    stmt = with_joins(select(*columns).select_from(Post)).where(Post.id == bindparam("post_id"))
    return stmt if hidden else stmt.where(Post.visible)


@cache
def _posts_statement(dialect: str) -> Select[*tuple[Any, ...]]:
    """Visible posts among the ids, with their tags, in one statement."""
    stmt = with_joins(select(*LIST_COLUMNS, tags_of(dialect)).select_from(Post))
    return stmt.where(Post.id.in_(bindparam("post_ids", expanding=True)), Post.visible)


def get_post(post_id: int, *, hidden: bool = False) -> dict[str, Any]:
    """One visible post with its body (`hidden`: drafts and deleted posts too, for their
    editor); NotFound when there is none. One statement, below the ORM (as feed_page)."""
    statement = _post_statement(db.engine.dialect.name, hidden)
    # The editor's read (hidden) runs inside a write: through the session, so it autoflushes.
    execute = db.session.execute if hidden else db.session.connection().execute
    row = execute(statement, {"post_id": post_id}).first() if post_id <= MAX_ID else None
    if row is None:
        raise NotFound(f"No published post with id {post_id}.")
    return post_item(row, post_urls(), body=row[TAGS + 1], tags=row[TAGS] or [])


def get_posts(ids: list[int]) -> list[dict[str, Any]]:
    """Visible posts among `ids`, in the order asked; missing or hidden ids are left out."""
    url_of = post_urls()
    rows = db.session.connection().execute(_posts_statement(db.engine.dialect.name), {"post_ids": ids})
    found = {row[0]: post_item(row, url_of, tags=row[TAGS] or []) for row in rows}
    return [found[i] for i in ids if i in found]


_IS_VISIBLE = select(Post.id).where(Post.id == bindparam("post_id"), Post.visible)


def ensure_visible(post_id: int) -> None:
    """NotFound unless the post exists and is visible."""
    if post_id > MAX_ID or db.session.execute(_IS_VISIBLE, {"post_id": post_id}).first() is None:
        raise NotFound(f"No published post with id {post_id}.")
