"""Authors: the people who write posts and comments; editors also sign in."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.types import Timestamp, utcnow


class Author(Base):
    __tablename__ = "authors"
    __table_args__ = (CheckConstraint("role IN ('author', 'editor')", name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(40), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    avatar_url: Mapped[str | None] = mapped_column(String(500))
    bio: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    # Visible posts by this author; maintained by the write services and the seed.
    post_count: Mapped[int] = mapped_column(default=0)
    role: Mapped[str] = mapped_column(String(16), default="author")
    password_hash: Mapped[str | None] = mapped_column(String(256))
