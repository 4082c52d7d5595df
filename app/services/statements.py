"""Prebuilt read statements run as prepared statements on the driver (the feed page's path).

A miss runs one statement; through SQLAlchemy's execution it paid the compiled-cache key of a
large SELECT (a walk of the whole statement tree), an execution context, a result object and a
fetch per row, and psycopg prepared it only after 5 executions on the same connection: with the
pool's connections taking turns (one per concurrent request), most pages were parsed and planned
by PostgreSQL every time (1.3 ms of its CPU per page against 0.5 ms prepared, issue 11). Here the
statement is compiled to its SQL once, sent through SQLAlchemy's cursor-level execution (events
and error handling as for any statement: app/compat.py) on a cursor that prepares it on first use
per connection, and its rows fetched in one call, as plain tuples. Other dialects (the embedded
SQLite) run it through SQLAlchemy as before.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import psycopg
from sqlalchemy import Executable
from sqlalchemy.engine import Connection, Dialect

from app.compat import sqlalchemy_cursor_execute
from app.extensions import db
from app.replicas import sessionless_read


class _PreparingCursor(psycopg.Cursor[Any]):
    """A psycopg cursor that prepares every statement it runs (on first use per connection;
    psycopg keeps the prepared statements per connection, up to its `prepared_max`) and asks
    for its rows in binary: timestamps and integers then load without parsing text (the
    callgrind gate's feed_miss -1.9%; the JSON of the tags is the same text either way)."""

    def execute(
        self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool | None = None
    ) -> Any:
        return super().execute(query, params, prepare=True, binary=True)


@lru_cache(maxsize=256)  # prebuilt statements x engines' dialects (one per app)
def _sql(statement: Executable, dialect: Dialect) -> str:
    return str(statement.compile(dialect=dialect))  # type: ignore[attr-defined]


def prepared_rows(statement: Executable, params: dict[str, Any]) -> list[Any]:
    """The rows (tuples) of a prebuilt `statement` with bind `params`, routed as any session read
    (the fill's replica, autocommit in a read-only block); in a read-only block on a connection
    of its own, not the session's (app/replicas.py: sessionless_read).
    `statement` must be built once and kept (its SQL is compiled once per statement object), with
    no expanding IN parameters and no bind or result processing beyond the driver's own."""
    registry = db.session.registry
    engine = sessionless_read(registry() if registry.has() else None, db.engine)
    if engine is None:
        return _rows(db.session.connection(), statement, params)
    with engine.connect() as conn:  # a read-only block's own checkout (app/replicas.py)
        return _rows(conn, statement, params)


def _rows(conn: Connection, statement: Executable, params: dict[str, Any]) -> list[Any]:
    if conn.dialect.name != "postgresql":
        return list(conn.execute(statement, params))
    raw: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
    with _PreparingCursor(raw) as cursor:
        sqlalchemy_cursor_execute(conn, cursor, _sql(statement, conn.dialect), params)
        return cursor.fetchall()
