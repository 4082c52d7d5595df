"""The client-side database deadline (app/deadline.py) on a real PostgreSQL, in-process (no
gevent: psycopg's own wait function). A server that takes longer than the deadline is what a
hung one looks like from the client; tests/stack/test_database_hang.py SIGSTOPs a real one
behind gunicorn and Nginx."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.deadline import CommitUnconfirmed, DeadlineExceeded, DeadlinePool, bind, bounded
from app.errors import problem_for, unconfirmed
from app.exceptions import OutcomeUnknown
from devstack.stack import wait_until

REPO = Path(__file__).resolve().parent.parent
DEADLINE = 0.5
SLOW = 3.0  # the server's answer comes this late: well past the deadline


@pytest.fixture
def engine(make_database: Callable[[str], str]) -> Iterator[Engine]:
    engine = create_engine(make_database("readwire_deadline").replace("postgresql://", "postgresql+psycopg://"))
    bind(engine)
    yield engine
    engine.dispose()


def _backend(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_statement_past_the_deadline_is_cut_short_and_its_connection_never_reused(engine: Engine) -> None:
    before = _backend(engine)
    started = time.monotonic()
    with pytest.raises(OperationalError) as caught, bounded(DEADLINE), engine.connect() as conn:
        conn.execute(text(f"SELECT pg_sleep({SLOW})"))
    assert time.monotonic() - started < DEADLINE + 1.0
    assert isinstance(caught.value.orig, DeadlineExceeded) and caught.value.connection_invalidated
    assert _backend(engine) != before  # a new connection: the one cut short was discarded
    with bounded(DEADLINE), engine.connect() as conn:  # within the deadline all is as usual
        assert conn.execute(text("SELECT 1")).scalar_one() == 1


def test_outside_any_scope_statements_are_not_bounded(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT pg_sleep({DEADLINE * 2}), 1")).one()[1] == 1


def test_a_commit_past_the_deadline_is_unconfirmed_and_may_have_been_applied(engine: Engine) -> None:
    with engine.begin() as conn:  # a COMMIT that takes SLOW seconds: a deferred trigger sleeps in it
        conn.execute(text("CREATE TABLE probe (id int)"))
        conn.execute(
            text(
                "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN PERFORM pg_sleep({SLOW}); RETURN NULL; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON probe DEFERRABLE INITIALLY DEFERRED"
                " FOR EACH ROW EXECUTE FUNCTION slow_commit()"
            )
        )
    with pytest.raises(OperationalError) as caught, bounded(DEADLINE), engine.connect() as conn:
        conn.execute(text("INSERT INTO probe VALUES (1)"))
        conn.commit()
    assert isinstance(caught.value.orig, CommitUnconfirmed) and unconfirmed(caught.value)
    # Nobody could tell the client: the server went on and applied it.
    with engine.connect() as conn:
        assert wait_until(lambda: conn.execute(text("SELECT count(*) FROM probe")).scalar_one() == 1, SLOW + 10)
    problem = problem_for(OutcomeUnknown())
    assert problem.status == 503 and problem.code == "outcome_unknown" and "Retry-After" not in problem.headers


def test_a_rollback_on_a_hung_server_ends_within_its_bound_quietly_and_the_pool_moves_on(
    engine: Engine, pg_server: object
) -> None:
    if pg_server is None:
        pytest.skip("TEST_DATABASE_URL: the server is not ours to SIGSTOP")
    conn = engine.raw_connection()
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT pg_backend_pid()")  # a transaction is open
        backend = int(cursor.fetchone()[0])
        os.kill(backend, signal.SIGSTOP)  # this backend only: the server hangs for this connection
        try:
            started = time.monotonic()
            with bounded(DEADLINE):
                conn.rollback()  # cut short: the connection is closed instead, and nothing raised
            assert time.monotonic() - started < DEADLINE + 1.0
        finally:
            os.kill(backend, signal.SIGCONT)
        assert conn.dbapi_connection is not None and conn.dbapi_connection.closed
    finally:
        conn.close()  # back to the pool, which discards it at its next checkout
    assert _backend(engine) != backend


def test_a_pool_checkout_waits_no_longer_than_the_deadline_left(make_database: Callable[[str], str]) -> None:
    """Every connection busy (held by requests stuck on a hung server): a request with 0.3 s of
    its deadline left waits 0.3 s for one, not the pool's timeout; one past its deadline is
    refused at once. Outside any scope the pool's own timeout holds."""
    url = make_database("readwire_deadline").replace("postgresql://", "postgresql+psycopg://")
    engine = create_engine(url, poolclass=DeadlinePool, pool_size=1, max_overflow=0, pool_timeout=5.0)
    bind(engine)
    try:
        with engine.connect() as busy:  # the pool's only connection
            busy.execute(text("SELECT 1"))
            started = time.monotonic()
            with pytest.raises(PoolTimeout), bounded(0.3), engine.connect():
                pass
            assert 0.25 < time.monotonic() - started < 2.0  # not the pool's 5 s
            started = time.monotonic()
            with bounded(0.2):
                time.sleep(0.25)
                with pytest.raises(PoolTimeout), engine.connect():
                    pass
            assert time.monotonic() - started < 1.0
        with bounded(0.3), engine.connect() as conn:  # a free connection: as usual
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
        with bounded(0.3):  # recreated (after a disconnect) while a request's deadline runs
            recreated = engine.pool.recreate()
        assert recreated.timeout() == 5.0  # the base timeout, not the bound of the moment
    finally:
        engine.dispose()


# The same checks in a gevent-patched process, as a gunicorn gevent worker runs them: there the
# connection waits on gevent's hub (app/deadline.py: DeadlineConnection._wait_on_hub).
_UNDER_GEVENT = """
from gevent import monkey; monkey.patch_all()
import sys, time
import gevent
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from app import deadline
from app.deadline import DeadlineExceeded, bind, bounded

assert deadline._HUB_WAIT is not None, "not waiting on the hub"
engine = create_engine(sys.argv[1])
bind(engine)
with engine.connect() as conn:
    before = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
started = time.monotonic()
try:
    with bounded(0.5), engine.connect() as conn:
        conn.execute(text("SELECT pg_sleep(3)"))
    raise AssertionError("not cut short")
except OperationalError as exc:
    assert isinstance(exc.orig, DeadlineExceeded) and exc.connection_invalidated, exc
assert time.monotonic() - started < 1.5, time.monotonic() - started
with bounded(5), engine.connect() as conn:
    assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != before  # discarded
    assert conn.execute(text("SELECT CAST(:n AS int) + 1"), {"n": 1}).scalar_one() == 2

ticks = []
def tick():
    while True:
        ticks.append(1)
        gevent.sleep(0.01)
def sleep_in_db():
    with bounded(5), engine.connect() as conn:
        return conn.execute(text("SELECT pg_sleep(0.5), 1")).one()[1]
ticker = gevent.spawn(tick)
started = time.monotonic()
jobs = [gevent.spawn(sleep_in_db) for _ in range(3)]
gevent.joinall(jobs, raise_error=True)
ticker.kill()
assert [job.value for job in jobs] == [1, 1, 1]
assert time.monotonic() - started < 1.4, "the waits did not overlap"
assert len(ticks) >= 20, len(ticks)  # the hub ran other greenlets meanwhile
print("ok")
"""


def test_under_gevent_waits_are_cooperative_and_bounded(make_database: Callable[[str], str]) -> None:
    url = make_database("readwire_deadline").replace("postgresql://", "postgresql+psycopg://")
    done = subprocess.run(
        [sys.executable, "-c", _UNDER_GEVENT, url], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
