"""Cache invalidations committed with the write that caused them (the transactional outbox)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.types import BigId, Timestamp, utcnow


class CacheOutbox(Base):
    """Namespaces to bump; the row is deleted once Redis has taken the INCRs."""

    __tablename__ = "cache_outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    namespaces: Mapped[str] = mapped_column(Text)  # space-separated
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
