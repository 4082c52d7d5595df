"""The client-side database deadline (issue 12): no request waits on PostgreSQL past DB_DEADLINE_MS.

A hung server (SIGSTOPped, a stalled host or network) answers nothing, and its server-side timeouts
(statement_timeout) cannot fire: a connection waiting on it waited as long as the hang lasted. So the
bound is kept by the client, in one place: every wait of a psycopg connection on the server (each
statement with its results, COMMIT, ROLLBACK, the connection handshake) goes through
`DeadlineConnection`, which gives up once the current scope's deadline has passed. A connection that
gave up is in an unknown state (a statement half answered, a COMMIT the server may still apply): it
is closed on the spot, so SQLAlchemy invalidates it and it never goes back to the pool.

Scopes: a request gets one budget, DB_DEADLINE_MS from its start (`init_app`), shared by all its
database waits; a background page refresh gets its own (`bounded`). Outside any scope (CLI commands,
migrations, the background loops) statements are not bounded here (statement_timeout still is), but
a ROLLBACK always is: ending a transaction never needs the server's answer (closing the connection
ends it too). Pool checkout waits at most DB_POOL_TIMEOUT and a new connection's handshake at most
connect_timeout (app/config.py), both inside the request's budget as well.

What a deadline means to the client is app/errors.py's: a read gets stale bytes from the page cache
or 503 with Retry-After; a write cut short before COMMIT changed nothing (503 with Retry-After); a
COMMIT cut short may have been applied (`CommitUnconfirmed`: 503 `outcome_unknown`, no Retry-After,
unless an Idempotency-Key makes the retry safe).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import psycopg
from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import QueuePool

log = logging.getLogger(__name__)

# When the current scope's database waits must end (time.monotonic()), None outside any scope.
_EXPIRY: ContextVar[float | None] = ContextVar("readwire_db_deadline", default=None)
# A ROLLBACK outside any scope (session cleanup after a request, background loops) waits this long.
_rollback_bound = [2.0]
_POLL = 0.1  # s: psycopg's own wake-up interval while it waits (its _WAIT_INTERVAL)


class DeadlineExceeded(psycopg.OperationalError):
    """A database wait outlived its scope's deadline; the connection was closed."""


class CommitUnconfirmed(DeadlineExceeded):
    """COMMIT outlived the deadline: the server may apply it or not, nobody can tell the client now."""


def expiry() -> float | None:
    return _EXPIRY.get()


def within(seconds: float) -> float:
    """`seconds`, or what is left of the current scope's deadline if that is sooner (never < 0).

    For the waits that are not the database's own but end with it: a miss waiting for another
    process's fill, a pool checkout. Unbounded, a request that waited behind one fill holder after
    another (each bounded by its own deadline, each started later) took 4.97 s in CI's chaos run
    while PostgreSQL was stopped."""
    end = _EXPIRY.get()
    return seconds if end is None else max(0.0, min(seconds, end - time.monotonic()))


def check() -> None:
    """Raise DeadlineExceeded when the current scope's deadline has passed: a database wait now
    could only be cut short (and a connection closed for nothing)."""
    end = _EXPIRY.get()
    if end is not None and time.monotonic() >= end:
        raise DeadlineExceeded("database deadline exceeded before the database was asked")


@contextmanager
def bounded(seconds: float) -> Iterator[None]:
    """Database waits in this block end within `seconds` (or the enclosing scope's deadline)."""
    end = time.monotonic() + seconds
    outer = _EXPIRY.get()
    token = _EXPIRY.set(end if outer is None else min(outer, end))
    try:
        yield
    finally:
        _EXPIRY.reset(token)


@contextmanager
def at_least(seconds: float) -> Iterator[None]:
    """Inside a scope, database waits in this block have `seconds` more even if its deadline is
    (nearly) spent: what must follow a COMMIT that succeeded (its cache invalidation) before the
    write can be acknowledged. Outside any scope: no bound, as everywhere."""
    outer = _EXPIRY.get()
    if outer is None:
        yield
        return
    token = _EXPIRY.set(max(outer, time.monotonic() + seconds))
    try:
        yield
    finally:
        _EXPIRY.reset(token)


class _Expired(Exception):
    pass


def _until(gen: Generator[Any, Any, Any], end: float) -> Generator[Any, Any, Any]:
    """psycopg's generator protocol, proxied: the wait functions send READY_NONE when their poll
    interval passes with nothing to read or write; past `end`, this one stops the operation."""
    try:
        state = next(gen)
    except StopIteration as stop:  # done without waiting (nothing to send, e.g. no transaction)
        return stop.value
    while True:
        ready = yield state
        if not ready and time.monotonic() >= end:
            gen.close()
            raise _Expired
        try:
            state = gen.send(ready)
        except StopIteration as stop:
            return stop.value


def _gevent_wait() -> Callable[..., None] | None:
    """gevent's wait on one event-loop watcher, when gevent has patched `select` (a gunicorn gevent
    worker; the gate's concurrent workload), else None."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return None
    if not monkey.is_module_patched("select"):
        return None
    from gevent.socket import wait

    return wait


_HUB_WAIT = _gevent_wait()  # the app is imported after gevent's patches (gunicorn.conf.py)


class DeadlineConnection(psycopg.Connection[Any]):
    """A psycopg connection whose every wait on the server ends by the current scope's deadline.

    Under gevent, it waits on the hub itself: one io watcher per wait, the deadline as its
    timeout. psycopg's own cooperative wait (`wait_poll`) goes through gevent's patched
    select.poll, which builds a poll object, its watchers and a timer for every wait, and wakes
    every 0.1 s to let the deadline be checked (issue 11: the driver's waits were the largest
    share of a miss's worker CPU after the statement itself)."""

    def wait(self, gen: Any, interval: float = _POLL, *args: Any, **kwargs: Any) -> Any:
        end = _EXPIRY.get()
        if _HUB_WAIT is not None and not args and not kwargs:
            return self._wait_on_hub(gen, end)
        if end is None:
            return super().wait(gen, interval, *args, **kwargs)
        return self._wait_until(gen, end, interval, *args, **kwargs)

    def _wait_on_hub(self, gen: Any, end: float | None) -> Any:
        """psycopg's generator protocol on gevent's hub. The wait states and the ready flags are
        the event loop's own bits (READ 1, WRITE 2); a read-or-write wait answers both ready,
        which psycopg's generators take as "try both" (a flush that cannot write yet asks again)."""
        from gevent import get_hub

        wait = _HUB_WAIT
        assert wait is not None
        fileno = self.pgconn.socket
        io = get_hub().loop.io
        try:
            state = next(gen)
            while True:
                watcher = io(fileno, int(state))
                try:
                    if end is None:
                        wait(watcher)
                    else:
                        wait(watcher, max(0.0, end - time.monotonic()), _Expired())
                finally:
                    watcher.close()
                state = gen.send(state)
        except StopIteration as stop:
            return stop.value
        except _Expired:
            gen.close()
            self.close()  # unknown state: SQLAlchemy sees it closed and invalidates it
            raise DeadlineExceeded("database deadline exceeded: the server did not answer in time") from None

    def _wait_until(self, gen: Any, end: float, interval: float, *args: Any, **kwargs: Any) -> Any:
        poll = max(0.001, min(interval, end - time.monotonic()))
        try:
            return super().wait(_until(gen, end), poll, *args, **kwargs)
        except _Expired:
            self.close()  # unknown state: SQLAlchemy sees it closed and invalidates it
            raise DeadlineExceeded("database deadline exceeded: the server did not answer in time") from None

    def commit(self) -> None:
        try:
            super().commit()
        except DeadlineExceeded:
            raise CommitUnconfirmed("database deadline exceeded during COMMIT: outcome unknown") from None

    def rollback(self) -> None:
        """Bounded always; a ROLLBACK cut short leaves the connection closed, which ends its
        transaction as surely (the pool discards a closed connection at its next checkout)."""
        if self.closed:
            return
        scope = _EXPIRY.get()
        token = _EXPIRY.set(time.monotonic() + _rollback_bound[0]) if scope is None else None
        try:
            super().rollback()
        except DeadlineExceeded:
            log.warning("rollback cut short by the database deadline: connection closed")
        finally:
            if token is not None:
                _EXPIRY.reset(token)

    @classmethod
    def _connect_gen(cls, *args: Any, **kwargs: Any) -> Any:
        """The handshake of a new connection, inside the current scope's deadline too."""
        gen = super()._connect_gen(*args, **kwargs)
        end = _EXPIRY.get()
        return gen if end is None else _bounded_connect(gen, end)


def _bounded_connect(gen: Any, end: float) -> Any:
    try:
        return (yield from _until(gen, end))
    except _Expired:
        raise DeadlineExceeded("database deadline exceeded while connecting") from None


class DeadlinePool(QueuePool):
    """A QueuePool whose checkout waits at most `timeout` and never past the scope's deadline
    (a request with 0.1 s left does not wait 2 s for a connection), and refuses at once when the
    deadline has passed. The bound is read per checkout from the context, so it holds per greenlet."""

    @property
    def _timeout(self) -> float:
        return within(self._base_timeout)

    @_timeout.setter
    def _timeout(self, value: float) -> None:
        self._base_timeout = value

    def _do_get(self) -> Any:
        end = _EXPIRY.get()
        if end is not None and time.monotonic() >= end:
            raise PoolTimeout("database deadline exceeded before a connection was checked out")
        return super()._do_get()

    def recreate(self) -> QueuePool:
        pool = super().recreate()  # built with the bound of this moment's context: restore the base
        pool._timeout = self._base_timeout
        return pool


def _connect(dialect: Any, record: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]) -> DeadlineConnection:
    return DeadlineConnection.connect(*cargs, **cparams)


def _discard_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    if dbapi_connection.closed:  # closed by a deadline during a ROLLBACK: connect afresh
        raise DisconnectionError("connection closed by the database deadline")


def bind(engine: Engine) -> None:
    """Make `engine`'s PostgreSQL connections DeadlineConnections (once per engine)."""
    if engine.dialect.name != "postgresql" or event.contains(engine, "do_connect", _connect):
        return
    event.listen(engine, "do_connect", _connect)
    event.listen(engine, "checkout", _discard_closed)


def init_app(app: Flask) -> None:
    """Each request's budget: DB_DEADLINE_MS from its start (0 = none), cleared at its end."""
    seconds = float(app.config["DB_DEADLINE_MS"]) / 1000
    if seconds <= 0:
        return
    _rollback_bound[0] = seconds

    def start() -> None:
        _EXPIRY.set(time.monotonic() + seconds)

    def end(exc: BaseException | None) -> None:
        _EXPIRY.set(None)

    app.before_request(start)
    app.teardown_request(end)


@contextmanager
def app_scope(app: Flask) -> Iterator[None]:
    """`bounded` by the app's deadline (a background page refresh); no bound without one."""
    seconds = float(app.config.get("DB_DEADLINE_MS", 0)) / 1000
    if seconds <= 0:
        yield
        return
    with bounded(seconds):
        yield
