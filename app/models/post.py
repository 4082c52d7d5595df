"""Posts and their tag links, with one partial index per feed access path."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ColumnElement, ForeignKey, Index, String, Text, and_, literal_column, text
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.types import BigId, Timestamp, utcnow

STATUSES = ("draft", "published")

# The one definition of "visible to anonymous clients": published and not deleted. As SQL text
# for the partial indexes below (and hand-written SQL); `Post.visible` is the same predicate for
# queries and for Python (tests/test_models.py checks the two compile alike).
VISIBLE_SQL = "status = 'published' AND deleted_at IS NULL"


class Post(Base):
    __tablename__ = "posts"
    __table_args__ = (
        CheckConstraint("status IN ('draft', 'published')", name="status"),
        CheckConstraint("status = 'draft' OR published_at IS NOT NULL", name="published_has_date"),
        # GET /feed: newest first, keyset on (published_at, id).
        Index(
            "ix_posts_feed",
            text("published_at DESC"),
            text("id DESC"),
            postgresql_where=text(VISIBLE_SQL),
            sqlite_where=text(VISIBLE_SQL),
        ),
        # GET /categories/{slug}/feed.
        Index(
            "ix_posts_category_feed",
            "category_id",
            text("published_at DESC"),
            text("id DESC"),
            postgresql_where=text(VISIBLE_SQL),
            sqlite_where=text(VISIBLE_SQL),
        ),
        # GET /authors/{username}/feed (and the author's post_count).
        Index(
            "ix_posts_author_feed",
            "author_id",
            text("published_at DESC"),
            text("id DESC"),
            postgresql_where=text(VISIBLE_SQL),
            sqlite_where=text(VISIBLE_SQL),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    title: Mapped[str] = mapped_column(String(300))
    summary: Mapped[str] = mapped_column(String(1000), default="")
    body: Mapped[str] = mapped_column(Text, default="")
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"))
    status: Mapped[str] = mapped_column(String(16), default="draft")
    published_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Denormalized so list pages need no COUNT; may lag by the list's cache TTL (contract).
    comment_count: Mapped[int] = mapped_column(default=0)

    @hybrid_property
    def visible(self) -> bool:
        return self.status == "published" and self.deleted_at is None

    @visible.inplace.expression
    @classmethod
    def _visible_expression(cls) -> ColumnElement[bool]:
        # Literals, not bound parameters: the planner must prove the partial indexes' predicate
        # from the query's, also once psycopg switches to prepared statements.
        return and_(cls.status == literal_column("'published'"), cls.deleted_at.is_(None))


class PostTag(Base):
    """A post's tag, carrying a copy of the post's published_at while the post is visible.

    The copy (NULL while the post is hidden) lets the tag feed walk a single index in
    (published_at DESC, post_id DESC) order instead of joining and sorting posts.
    The write services keep it in step with the post in the same transaction.
    """

    __tablename__ = "post_tags"
    __table_args__ = (
        Index(
            "ix_post_tags_tag_feed",
            "tag_id",
            text("published_at DESC"),
            text("post_id DESC"),
            postgresql_where=text("published_at IS NOT NULL"),
            sqlite_where=text("published_at IS NOT NULL"),
        ),
    )

    post_id: Mapped[int] = mapped_column(BigId, ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id"), primary_key=True)
    published_at: Mapped[datetime | None] = mapped_column(Timestamp)
