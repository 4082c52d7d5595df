"""A gunicorn app for tests/stack only: the real app plus a route that sleeps inside PostgreSQL,
through the app's own SQLAlchemy pool and psycopg connections."""

from __future__ import annotations

from flask import request
from sqlalchemy import text

from app import create_app
from app.extensions import db

app = create_app()


@app.get("/_test/pg_sleep")
def pg_sleep() -> dict[str, float]:
    seconds = float(request.args.get("s", "0.5"))
    db.session.execute(text("SELECT pg_sleep(:s)"), {"s": seconds})
    return {"slept": seconds}
