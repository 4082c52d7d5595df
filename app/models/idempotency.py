"""Idempotency keys: the first outcome of a keyed write, replayed to every retry with the key."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.types import Timestamp


class IdempotencyKey(Base):
    """One author's key: the request it named (fingerprint) and the answer its write committed,
    written in the write's own transaction (app/services/idempotency.py)."""

    __tablename__ = "idempotency_keys"
    # The expiry sweep deletes by age.
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32))  # SHA-256 of method, path and body
    status: Mapped[int] = mapped_column(SmallInteger)
    body: Mapped[bytes] = mapped_column(LargeBinary)  # the answer's bytes, exactly as first sent
    location: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)
