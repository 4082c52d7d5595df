"""What readers are pushed (app/push): one row per visible change to a post, written in the
write's transaction, so its id is a resumable position (Server-Sent Events' Last-Event-ID)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.types import BigId, Timestamp, utcnow


class PostEvent(Base):
    """`post.created`, `post.updated` or `post.deleted` of one post. Ids grow in commit order:
    writers take one transaction-scoped lock before inserting (app/push/events.py)."""

    __tablename__ = "post_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    post_id: Mapped[int] = mapped_column(BigInteger)  # no foreign key: events outlive nothing, cost nothing
    scopes: Mapped[str] = mapped_column(Text)  # space-separated: all category:<slug> tag:<slug> author:<username>
    data: Mapped[str] = mapped_column(Text)  # the event's JSON, as streamed
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
