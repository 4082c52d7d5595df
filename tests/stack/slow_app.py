"""A gunicorn app for tests/stack only: the real app plus a route that sleeps inside PostgreSQL,
through the app's own SQLAlchemy pool and psycopg connections, and a slow boot on demand."""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import psycopg
from flask import request
from sqlalchemy import text

from app import create_app
from app.extensions import db

# A worker loading this app first sleeps the seconds written in this file, if it exists: a slow
# boot (a busy machine) on demand, e.g. for the workers a reload starts.
_boot_delay = Path(os.environ.get("SLOW_APP_BOOT_DELAY_FILE", "/nonexistent"))
if _boot_delay.exists():
    time.sleep(float(_boot_delay.read_text()))

app = create_app()


@app.get("/_test/pg_sleep")
def pg_sleep() -> dict[str, float]:
    seconds = float(request.args.get("s", "0.5"))
    db.session.execute(text("SELECT pg_sleep(:s)"), {"s": seconds})
    return {"slept": seconds}


@app.get("/_test/pg_sleep_plain")
def pg_sleep_plain() -> dict[str, float]:
    """The same sleep on a plain psycopg connection (not the app's DeadlineConnection, which waits
    on gevent's hub by itself): what psycopg's own wait function does to a gevent worker."""
    seconds = float(request.args.get("s", "0.5"))
    url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_sleep(%s)", (seconds,))
    return {"slept": seconds}


@app.get("/_test/gc")
def gc_state() -> dict[str, int]:
    """What the collector examines in this worker (gunicorn.conf.py freezes the loaded heap)."""
    return {"frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects())}
