"""Categories (one per post) and tags (many per post)."""

from __future__ import annotations

from sqlalchemy import Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class Category(Base):
    __tablename__ = "categories"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    # Visible posts in this category; maintained by the write services and the seed.
    post_count: Mapped[int] = mapped_column(default=0)


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (
        # GET /tags: top N by post_count, ties by id, straight off the index.
        Index("ix_tags_popularity", text("post_count DESC"), "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    # Visible posts with this tag; maintained by the write services and the seed.
    post_count: Mapped[int] = mapped_column(default=0)
