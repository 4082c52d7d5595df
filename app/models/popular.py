"""The /popular ranking: one snapshot per interval, its ranks kept while cursors may use them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Integer
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.types import Timestamp


class PopularSnapshot(Base):
    """A ranking computed once for the interval starting at `id` (Unix seconds)."""

    __tablename__ = "popular_snapshots"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    computed_at: Mapped[datetime] = mapped_column(Timestamp)
    size: Mapped[int] = mapped_column(Integer)


class PopularRank(Base):
    """Post at `rank` (1 = hottest) in a snapshot; a page is a range scan of the primary key."""

    __tablename__ = "popular_ranks"

    snapshot_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("popular_snapshots.id", ondelete="CASCADE"), primary_key=True
    )
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    post_id: Mapped[int] = mapped_column(BigInteger)
    score: Mapped[float] = mapped_column(Float)
