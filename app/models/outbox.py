"""Cache invalidations committed with the write that caused them (the transactional outbox)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.types import BigId, Timestamp, utcnow


class CacheOutbox(Base):
    """Namespaces to bump; the row is deleted once Redis has taken the INCRs."""

    __tablename__ = "cache_outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    namespaces: Mapped[str] = mapped_column(Text)  # space-separated
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class CacheGeneration(Base):
    """A cache namespace's generation as the database knows it: bumped inside each write's
    transaction (app/cache/generations.py), exact at commit. The `@epoch` row is a random number
    chosen when the table was made."""

    __tablename__ = "cache_generations"

    namespace: Mapped[str] = mapped_column(Text, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger)
