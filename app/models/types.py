"""Column types and defaults shared by the models."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, DateTime, Integer

# BIGINT identity on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Timestamp = DateTime(timezone=True)


def utcnow() -> datetime:
    """Column default, evaluated per row (never at import)."""
    return datetime.now(UTC)


# The largest BIGINT: larger ids cannot exist, and must not reach the driver.
MAX_ID = 2**63 - 1
