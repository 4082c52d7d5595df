"""Every use of a third-party library's private API, in one place.

Each wrapper says why the public API does not do, and tests/test_compat.py checks each one
against the installed versions so an upgrade that moves them fails loudly there, not
silently on the request path (a wrapper that stops working would otherwise degrade to a
slower or wrong path without anyone noticing).
"""

from __future__ import annotations

import logging
import select
from collections.abc import Callable
from typing import Any

from flask.globals import _cv_request
from redis.connection import Connection
from sqlalchemy.engine import Connection as SqlConnection

try:  # The C poll even under gevent: gevent's cooperative poll costs ~11 µs for a zero timeout.
    from gevent import monkey

    _poll = monkey.get_original("select", "poll")
except ImportError:  # pragma: no cover - gevent is a dependency
    _poll = select.poll


def redis_push_pending(conn: Connection) -> bool:
    """Whether a RESP3 push may be waiting on a redis-py connection, without blocking and
    without entering the event loop: bytes already buffered by the hiredis reader, or readable
    on the socket. redis-py's public `can_read(timeout=0)` goes through the (gevent-patched)
    poll and changes the socket timeout twice per call (~11 µs; this is ~1 µs)."""
    reader = getattr(conn._parser, "_reader", None)
    if reader is not None and reader.has_data():
        return True
    sock = conn._sock
    if sock is None:
        return False
    poller = _poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class _PendingByPoll:
    """Mixin: `can_read()` (no timeout) answered by redis_push_pending."""

    def can_read(self, timeout: float = 0) -> bool:
        conn: Connection = self  # type: ignore[assignment]
        if timeout or conn._sock is None or getattr(conn._parser, "_reader", None) is None:  # not hiredis
            return bool(super().can_read(timeout))  # type: ignore[misc]
        return redis_push_pending(conn)


def redis_cheap_checkout(pool: Any) -> None:
    """Make a redis-py pool's checkouts check their connection with the C poll. Every
    `get_connection` asks the connection whether unread bytes are pending (`can_read()`), which
    under gevent goes through the patched, cooperative poll: 20-30 µs of a 37 µs checkout and
    release, twice per cache miss (lookup, fill). The question is redis_push_pending's (~1 µs);
    the pool's own answer to it (reconnect when something is pending) is unchanged. The class
    is the pool's own (plain, TLS, Unix socket, Sentinel-managed), subclassed."""
    cls = pool.connection_class
    if not issubclass(cls, _PendingByPoll):
        pool.connection_class = type(cls.__name__, (_PendingByPoll, cls), {})


def redis_on_invalidation(conn: Connection, handler: Callable[[list[Any]], None]) -> None:
    """Route a RESP3 connection's client-tracking invalidation pushes to `handler` (redis-py
    sets this per parser; its public API only offers it inside its own client-side cache)."""
    conn._parser.set_invalidation_push_handler(handler)


def redis_pool_in_use(pool: Any) -> int | None:
    """Connections checked out of a redis-py pool (redis-py has no public counter); None if
    the pool does not say."""
    in_use = getattr(pool, "_get_in_use_connections", None)
    return None if in_use is None else len(in_use())


def current_request() -> Any:
    """The current Flask request object or None, with one ContextVar read: `flask.request`
    is a proxy that costs two lookups and raises outside a request (this is the observability
    middleware's per-request path)."""
    context = _cv_request.get(None)
    return None if context is None else context.request


def sqlalchemy_cursor_execute(conn: SqlConnection, cursor: Any, statement: str, parameters: Any) -> None:
    """Run `statement` on a driver cursor of `conn` the way SQLAlchemy runs its own: its
    before/after_cursor_execute events fire (the SQL budget and the tests count statements with
    them) and a driver error is handled as on any other statement (wrapped in DBAPIError, the
    connection invalidated when it went away). The public `exec_driver_sql` makes its own cursor,
    so a statement could not be prepared by the driver (psycopg's `prepare=True`), and builds an
    execution context and a result around it that a page of plain tuples does not need."""
    conn._cursor_execute(cursor, statement, parameters)


def rule_converters(rule: Any) -> dict[str, Any]:
    """A werkzeug Rule's converters by argument name (werkzeug exposes them only privately);
    the OpenAPI document reads the path parameters' patterns from them."""
    converters: dict[str, Any] = rule._converters
    return converters


def logging_start_time() -> float:
    """When the logging module was imported (LogRecord.relativeCreated is measured from it)."""
    start: float = logging._startTime  # type: ignore[attr-defined]
    return start


class _Gathered:
    """Stands in for a gunicorn response's socket while it writes: keeps what it sends."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.parts.append(bytes(data))


def gunicorn_head_with_body() -> None:
    """Make gunicorn send a response's head and its first body bytes in one send. gunicorn's
    `Response.write` sends them with two `sendall` calls (`send_headers`, then the body); a
    worker that dies between the two leaves Nginx with a head it has already passed on to the
    client and a body that never comes, a response it cannot replay (the client sees it cut
    short). In one send, a page (well under the socket buffer) is in the kernel whole or not at
    all, so Nginx replays every answer it did not get. One system call fewer per response, too.
    No setting or hook offers it: `Response.write` is wrapped, the socket swapped while it runs."""
    from gunicorn.http.wsgi import Response

    write = Response.write
    if getattr(write, "head_with_body", False):
        return

    def write_with_head(self: Any, arg: bytes) -> None:
        if self.headers_sent:
            write(self, arg)
            return
        sock, gathered = self.sock, _Gathered()
        self.sock = gathered
        try:
            write(self, arg)
        finally:
            self.sock = sock
            if gathered.parts:
                sock.sendall(b"".join(gathered.parts))

    write_with_head.head_with_body = True  # type: ignore[attr-defined]
    Response.write = write_with_head


def gunicorn_error_writer(write: Callable[[Any, int, str, str], None]) -> None:
    """Make gunicorn answer the requests it refuses itself (bad request line or headers, limits,
    framing; before the app sees them) with `write(sock, status, reason, message)` instead of its
    HTML page. Its public settings offer no hook: Worker.handle_error calls the module function
    `gunicorn.util.write_error` by attribute, so replacing that reaches every worker class."""
    from gunicorn import util

    util.write_error = write
