"""Each private API app/compat.py relies on still exists and still means what it meant: an
upgrade that moves one fails here, loudly, instead of degrading the request path."""

from __future__ import annotations

import logging
import socket
import time
from types import SimpleNamespace

import pytest
import redis
from flask import Flask
from redis.connection import Connection
from werkzeug.routing import Rule

from app import compat
from devstack.servers import Redis
from devstack.stack import wait_until


def test_redis_push_pending_sees_a_push_and_nothing_else(redis_server: Redis) -> None:
    conn = Connection(host="127.0.0.1", port=redis_server.port, protocol=3, socket_timeout=1.0)
    conn.connect()
    pushed: list[object] = []
    compat.redis_on_invalidation(conn, pushed.append)
    conn.send_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "compat:")
    conn.read_response()
    try:
        assert compat.redis_push_pending(conn) is False
        redis.Redis(port=redis_server.port).incr("compat:key")
        deadline = time.monotonic() + 5
        while not compat.redis_push_pending(conn):
            assert time.monotonic() < deadline, "the invalidation push never showed as pending"
            time.sleep(0.001)
        conn.read_response(push_request=True, timeout=0)
        assert pushed and pushed[0][1] == [b"compat:key"]  # type: ignore[index]
    finally:
        conn.disconnect()


def test_redis_pool_in_use_counts_checked_out_connections(redis_server: Redis) -> None:
    pool = redis.BlockingConnectionPool(port=redis_server.port, max_connections=4)
    assert compat.redis_pool_in_use(pool) == 0
    conn = pool.get_connection()
    assert compat.redis_pool_in_use(pool) == 1
    pool.release(conn)
    assert compat.redis_pool_in_use(pool) == 0


def test_current_request_is_the_flask_request_or_none() -> None:
    app = Flask(__name__)
    assert compat.current_request() is None
    with app.test_request_context("/x?y=1") as context:
        assert compat.current_request() is context.request


def test_rule_converters_by_argument_name() -> None:
    app = Flask(__name__)
    app.add_url_rule("/posts/<int:post_id>/<slug>", "x", lambda post_id, slug: "")
    rule = next(r for r in app.url_map.iter_rules() if isinstance(r, Rule) and r.endpoint == "x")
    converters = compat.rule_converters(rule)
    assert sorted(converters) == ["post_id", "slug"]
    assert type(converters["post_id"]).__name__ == "IntegerConverter"


def test_logging_start_time_is_the_base_of_relative_created() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert abs((record.created - compat.logging_start_time()) * 1000 - record.relativeCreated) < 1.0


def test_gunicorn_refusals_go_through_the_installed_error_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    from gunicorn import util
    from gunicorn.http.errors import InvalidRequestLine, LimitRequestHeaders
    from gunicorn.workers.base import Worker

    monkeypatch.setattr(util, "write_error", util.write_error)  # restored after the test
    written: list[tuple[int, str]] = []
    compat.gunicorn_error_writer(lambda sock, status, reason, message: written.append((status, reason)))
    worker = SimpleNamespace(log=logging.getLogger("compat-test"), cfg=None)
    Worker.handle_error(worker, None, None, ("127.0.0.1", 1), InvalidRequestLine("GARBAGE"))  # type: ignore[arg-type]
    Worker.handle_error(worker, None, None, ("127.0.0.1", 1), LimitRequestHeaders("too big"))  # type: ignore[arg-type]
    assert written == [(400, "Bad Request"), (431, "Request Header Fields Too Large")]


class CountingSocket(socket.socket):
    """A real socket that records each sendall (one per send of the response)."""

    sends: list[bytes]

    def sendall(self, data: object, flags: int = 0) -> None:  # type: ignore[override]
        self.sends.append(bytes(data))  # type: ignore[call-overload]
        super().sendall(data, flags)  # type: ignore[arg-type]


@pytest.mark.parametrize("chunked", [False, True])
def test_gunicorn_sends_a_response_head_with_its_first_body_bytes(
    monkeypatch: pytest.MonkeyPatch, chunked: bool
) -> None:
    """gunicorn's own Response, on a real socket pair: the head and the first body bytes leave
    in one send (two without compat.gunicorn_head_with_body); later chunks go on their own."""
    from gunicorn.config import Config
    from gunicorn.http.parser import RequestParser
    from gunicorn.http.wsgi import Response, create

    monkeypatch.setattr(Response, "write", Response.write)  # restored after the test
    compat.gunicorn_head_with_body()
    compat.gunicorn_head_with_body()  # idempotent: a worker's hook may run it again
    server, client = socket.socketpair()
    sock = CountingSocket(fileno=server.detach())
    sock.sends = []
    try:
        client.sendall(b"GET /page HTTP/1.1\r\nHost: test\r\n\r\n")
        cfg = Config()
        req = next(iter(RequestParser(cfg, sock, ("127.0.0.1", 1))))
        resp, _ = create(req, sock, ("127.0.0.1", 1), ("127.0.0.1", 2), cfg)
        length = [] if chunked else [("Content-Length", "7")]
        resp.start_response("200 OK", [("Content-Type", "application/json"), *length])
        resp.write(b'{"a":')
        resp.write(b"1}")
        resp.close()
        head, first = sock.sends[0].split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Type: application/json" in head
        assert first == (b'5\r\n{"a":\r\n' if chunked else b'{"a":')
        assert sock.sends[1:] == ([b"2\r\n1}\r\n", b"0\r\n\r\n"] if chunked else [b"1}"])
    finally:
        sock.close()
        client.close()


def test_sqlalchemy_cursor_execute_fires_events_and_wraps_driver_errors(app: Flask, db_tx: object) -> None:
    """A statement run on a driver cursor through the wrapper is seen by before_cursor_execute
    listeners (the SQL budget counts with them) and a driver error comes out as SQLAlchemy's
    DBAPIError, as from any other statement."""
    from sqlalchemy import event
    from sqlalchemy.exc import DBAPIError

    from app.extensions import db

    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        seen.append(statement)

    with app.app_context():
        conn = db.session.connection()
        engine = conn.engine
        event.listen(engine, "before_cursor_execute", record)
        try:
            cursor = conn.connection.driver_connection.cursor()
            compat.sqlalchemy_cursor_execute(conn, cursor, "SELECT %(n)s::int + 1", {"n": 41})
            assert cursor.fetchall() == [(42,)]
            assert seen == ["SELECT %(n)s::int + 1"]
            with pytest.raises(DBAPIError):
                compat.sqlalchemy_cursor_execute(conn, cursor, "SELECT no_such_column FROM authors", {})
        finally:
            event.remove(engine, "before_cursor_execute", record)
            db.session.rollback()


def test_redis_cheap_checkout_answers_can_read_as_the_pool_asks_it(redis_server: Redis) -> None:
    """The pool's connections answer `can_read()` (what get_connection asks of each connection it
    hands out) with redis_push_pending: False on a clean connection, True once a reply is
    waiting unread; with a timeout, redis-py's own answer."""
    pool = redis.BlockingConnectionPool(port=redis_server.port, max_connections=1)
    base = pool.connection_class
    compat.redis_cheap_checkout(pool)
    compat.redis_cheap_checkout(pool)  # idempotent
    assert issubclass(pool.connection_class, base) and pool.connection_class.__mro__[2] is base
    conn = pool.get_connection()
    try:
        assert type(conn) is pool.connection_class and conn.can_read() is False
        conn.send_command("PING")  # its reply is left unread
        assert wait_until(conn.can_read, 5)
        assert conn.can_read(timeout=0.01) is True
        assert conn.read_response() == b"PONG" and conn.can_read() is False
    finally:
        pool.release(conn)
        pool.disconnect()
