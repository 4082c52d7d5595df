"""Post and comment writes: one transaction each, keeping the denormalized columns exact.

The read path trusts these copies, so every write maintains them in the same transaction as
the change itself:

- `post_tags.published_at` is the post's `published_at` while the post is visible
  (published and not deleted), else NULL;
- `authors.post_count`, `categories.post_count`, `tags.post_count` count visible posts;
- `posts.comment_count` counts the post's comments.

Each post write takes the post's footprint (visibility, author, category, tags) before and
after the change and applies the difference with relative `UPDATE ... SET post_count =
post_count + :d` statements (never a recount): one per table, tables always in the same order
(authors, categories, tags), so concurrent writes take counter-row locks in one order. Editing
a post locks its row first (SELECT ... FOR UPDATE), so two edits of one post cannot both apply
the same transition. Everything goes through `db.session` (the cache tier listens to its
flushes and commits), and each service commits exactly once.

Publishing: a post's `published_at` is set to now the first time it is published and kept
afterwards (also by a soft delete, which is final: a deleted post cannot be edited again).
Re-publishing an unpublished post therefore puts it back at its original place in the feeds
rather than on top (a republish is a correction, not news), and its position and cursors stay
stable; walkers already past that place will not see it again.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, literal, select, text, union_all, update
from sqlalchemy.exc import IntegrityError

from app.exceptions import Forbidden, Invalid, NotFound
from app.extensions import db
from app.models import Author, Category, Comment, Post, PostTag, Tag
from app.models.types import MAX_ID, utcnow
from app.services import idempotency
from app.services.items import author_item, comment_item
from app.services.posts import get_post

SLUG_SUFFIX_BYTES = 3  # 6 hex digits: collisions are rare; a taken slug draws a new suffix
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, slots=True)
class Footprint:
    """What one post contributes to the denormalized counters (nothing while hidden)."""

    visible: bool
    author_id: int
    category_id: int
    tag_ids: frozenset[int]


def _footprint(post: Post, tag_ids: Iterable[int]) -> Footprint:
    return Footprint(post.visible, post.author_id, post.category_id, frozenset(tag_ids))


# PostgreSQL: every post_count shift of a write in one prepared statement (its steps as arrays):
# the authors' and categories' UPDATEs as data-modifying CTEs of the tags' UPDATE. Built once: the
# Core statement it replaces (CASE per table, its shape varying with the ids) cost ~2 ms of a
# write's CPU to construct and key on every call.
_SHIFT_SQL = text(
    "WITH step AS (SELECT * FROM unnest(CAST(:tables AS text[]), CAST(:ids AS bigint[]), CAST(:steps AS integer[]))"
    " AS s(tbl, id, step)),"
    " a AS (UPDATE authors AS t SET post_count = t.post_count + step.step FROM step"
    " WHERE step.tbl = 'authors' AND t.id = step.id),"
    " c AS (UPDATE categories AS t SET post_count = t.post_count + step.step FROM step"
    " WHERE step.tbl = 'categories' AND t.id = step.id)"
    " UPDATE tags AS t SET post_count = t.post_count + step.step FROM step WHERE step.tbl = 'tags' AND t.id = step.id"
)


def _shift_post_counts(before: Footprint, after: Footprint) -> None:
    """Move post_count by the difference between two footprints: on PostgreSQL one statement
    (`_SHIFT_SQL`), elsewhere at most one relative UPDATE per table (`post_count + CASE id WHEN
    .. THEN step .. END`). Tables always in the same order and ids sorted, so writers take their
    row locks in the same order as one another."""
    shifts: list[tuple[Any, dict[int, int]]] = []
    for model, old, new in (
        (Author, [before.author_id], [after.author_id]),
        (Category, [before.category_id], [after.category_id]),
        (Tag, before.tag_ids, after.tag_ids),
    ):
        delta: Counter[int] = Counter(new if after.visible else ())
        delta.subtract(old if before.visible else ())
        steps = {row_id: step for row_id, step in sorted(delta.items()) if step}
        if steps:
            shifts.append((model, steps))
    if not shifts:
        return
    if db.session.get_bind().dialect.name == "postgresql":
        rows = [(model.__tablename__, row_id, step) for model, steps in shifts for row_id, step in steps.items()]
        tables, ids, counts = (list(column) for column in zip(*rows, strict=True))
        db.session.execute(_SHIFT_SQL, {"tables": tables, "ids": ids, "steps": counts})
        return
    for model, steps in shifts:  # counters are never read back here
        shifted = model.post_count + case(steps, value=model.id)
        statement = update(model).where(model.id.in_(steps)).values(post_count=shifted)
        db.session.execute(statement, execution_options={"synchronize_session": False})


def _sync_tag_links(post: Post, links: dict[int, PostTag], tag_ids: frozenset[int]) -> None:
    """Make the post's post_tags rows match `tag_ids`, each carrying the visible-only date copy."""
    copy = post.published_at if post.visible else None
    for tag_id, link in links.items():
        if tag_id not in tag_ids:
            db.session.delete(link)
        elif link.published_at != copy:
            link.published_at = copy
    for tag_id in sorted(tag_ids - links.keys()):
        db.session.add(PostTag(post_id=post.id, tag_id=tag_id, published_at=copy))


def _apply(post: Post, before: Footprint, links: dict[int, PostTag], tag_ids: frozenset[int]) -> None:
    _sync_tag_links(post, links, tag_ids)
    _shift_post_counts(before, _footprint(post, tag_ids))


# Category and tag slugs -> ids in one statement, built once (the slugs are expanding parameters).
_TAXONOMY = union_all(
    select(literal("category"), Category.slug, Category.id).where(
        Category.slug.in_(bindparam("categories", expanding=True))
    ),
    select(literal("tag"), Tag.slug, Tag.id).where(Tag.slug.in_(bindparam("tags", expanding=True))),
)


def _resolve_taxonomy(data: dict[str, Any]) -> tuple[int | None, frozenset[int] | None]:
    """Category and tag slugs -> ids (None where not given), in one query; unknown slugs are a 422."""
    if "category" not in data and "tags" not in data:
        return None, None
    found: dict[str, dict[str, int]] = {"category": {}, "tag": {}}
    params = {"categories": [data["category"]] if "category" in data else [], "tags": data.get("tags", [])}
    for kind, slug, row_id in db.session.execute(_TAXONOMY, params):
        found[kind][slug] = row_id
    errors: dict[str, list[str]] = {}
    category_id = tag_ids = None
    if "category" in data:
        category_id = found["category"].get(data["category"])
        if category_id is None:
            errors["category"] = [f"Unknown category '{data['category']}'."]
    if "tags" in data:
        missing = [slug for slug in data["tags"] if slug not in found["tag"]]
        if missing:
            errors["tags"] = [f"Unknown tag '{slug}'." for slug in missing]
        tag_ids = frozenset(found["tag"].values())
    if errors:
        raise Invalid(errors)
    return category_id, tag_ids


def _slug_taken(slug: str) -> bool:
    return db.session.execute(select(Post.id).where(Post.slug == slug)).first() is not None


def _slug_from_title(title: str) -> str:
    """`Hello, Wörld!` -> `hello-world-3f9a1c`: ASCII words of the title plus a random suffix."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().lower()
    base = _NOT_SLUG.sub("-", ascii_title).strip("-")[: 200 - 1 - 2 * SLUG_SUFFIX_BYTES].strip("-") or "post"
    while True:
        slug = f"{base}-{secrets.token_hex(SLUG_SUFFIX_BYTES)}"
        if not _slug_taken(slug):
            return slug


def _slug_conflict() -> Invalid:
    return Invalid({"slug": ["This slug is already in use."]})


def _insert(post: Post) -> None:
    """INSERT the post now (its id is needed); a slug taken concurrently is still a 422."""
    db.session.add(post)
    try:
        db.session.flush()
    except IntegrityError as exc:
        db.session.rollback()
        if "uq_posts_slug" in str(exc.orig) or "posts.slug" in str(exc.orig):  # PostgreSQL, SQLite
            raise _slug_conflict() from None
        raise


def _editable_post(author_id: int, post_id: int) -> tuple[Post, dict[int, PostTag]]:
    """The post (row-locked) and its tag links; NotFound when missing or deleted, Forbidden when
    not the caller's."""
    post = None
    if post_id <= MAX_ID:
        locked = select(Post).where(Post.id == post_id).with_for_update().execution_options(populate_existing=True)
        post = db.session.execute(locked).scalar_one_or_none()
    if post is None or post.deleted_at is not None:
        raise NotFound(f"No post with id {post_id}.")
    if post.author_id != author_id:
        raise Forbidden("Editors may change only their own posts.")
    links = db.session.execute(select(PostTag).where(PostTag.post_id == post.id)).scalars()
    return post, {link.tag_id: link for link in links}


def _publish(post: Post, status: str, now: datetime) -> None:
    post.status = status
    if status == "published" and post.published_at is None:
        post.published_at = now


def _detail(post: Post) -> dict[str, Any]:
    """The post as GET /posts/{id} shows it (drafts and deleted posts too), plus `status`."""
    item = get_post(post.id, hidden=True)
    item["status"] = post.status
    return item


def create_post(author_id: int, data: dict[str, Any]) -> dict[str, Any]:
    """A new post by `author_id` (published unless `status` is draft); returns its detail."""
    category_id, tag_ids = _resolve_taxonomy(data)
    if "slug" in data and _slug_taken(data["slug"]):
        raise _slug_conflict()
    now = utcnow()
    post = Post(
        slug=data.get("slug") or _slug_from_title(data["title"]),
        title=data["title"],
        summary=data["summary"],
        body=data["body"],
        author_id=author_id,
        category_id=category_id,
        status="draft",
        created_at=now,
        updated_at=now,
        comment_count=0,
    )
    _publish(post, data["status"], now)
    _insert(post)
    hidden = Footprint(False, author_id, post.category_id, frozenset())
    _apply(post, hidden, {}, tag_ids or frozenset())
    detail = _detail(post)  # read in the transaction that wrote it, so it can be kept with an idempotency key
    idempotency.record_answer(detail)
    db.session.commit()
    return detail


def update_post(author_id: int, post_id: int, changes: dict[str, Any]) -> dict[str, Any]:
    """Edit, publish or unpublish the caller's post; returns its detail."""
    post, links = _editable_post(author_id, post_id)
    category_id, tag_ids = _resolve_taxonomy(changes)
    before = _footprint(post, links)
    now = utcnow()
    for field in ("title", "summary", "body"):
        if field in changes:
            setattr(post, field, changes[field])
    if category_id is not None:
        post.category_id = category_id
    if "status" in changes:
        _publish(post, changes["status"], now)
    post.updated_at = now
    _apply(post, before, links, before.tag_ids if tag_ids is None else tag_ids)
    db.session.commit()
    return _detail(post)


def delete_post(author_id: int, post_id: int) -> None:
    """Soft-delete the caller's post: it leaves every feed and count at once."""
    post, links = _editable_post(author_id, post_id)
    before = _footprint(post, links)
    post.deleted_at = post.updated_at = utcnow()
    _apply(post, before, links, before.tag_ids)
    db.session.commit()


def add_comment(author_id: int, post_id: int, body: str) -> dict[str, Any]:
    """A new comment on a visible post (404 otherwise), counted in the same transaction."""
    missing = NotFound(f"No published post with id {post_id}.")
    if post_id > MAX_ID:
        raise missing
    bump = (
        update(Post)
        .where(Post.id == post_id, Post.visible)
        .values(comment_count=Post.comment_count + 1)
        .returning(Post.id)
    )
    # The atomic increment also row-locks the post, so it cannot be hidden under us.
    if db.session.execute(bump, execution_options={"synchronize_session": False}).first() is None:
        raise missing
    comment = Comment(post_id=post_id, author_id=author_id, body=body, created_at=utcnow())
    db.session.add(comment)
    db.session.flush()
    author = db.session.get_one(Author, author_id)
    item = comment_item(
        comment.id,
        post_id,
        author_item(author.id, author.username, author.display_name, author.avatar_url),
        comment.body,
        comment.created_at,
    )
    idempotency.record_answer(item)
    db.session.commit()
    return item
